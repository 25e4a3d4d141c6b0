"""The files of RUN_DIR/report/, named here and nowhere else: `write.outputs` (which files a run's report
has, and what writes each), report.md's links and its Files section, and the tests read these names.

  metrics.parquet, metrics.csv   long format: run, fold, seed, class, metric, value. Every per-class
                                 metric, plus each summary metric (accuracy_f, macro_gain, ...) with
                                 class null, as it belongs to no class.
  folds.csv                      one row per fold x seed: the excluded class's name, Gain and TPR_h, P, mean
                                 harm and dfpr over classes, balanced accuracies of f and h, each with
                                 <figure>_lo and <figure>_hi (report.level bootstrap interval, empty
                                 where n/a), accuracies of f and h, McNemar's p of f against h
                                 (mcnemar_p), the certified bound on Harm (harm_bound: corrector.max_harm,
                                 empty when uncertified) beside test_harm (Harm on test by the bound's
                                 measure) and harm_held, f's balanced accuracy on its
                                 trained classes beside the full model's on them, the base net's epochs_run
                                 and best_epoch (empty where the result has no training record), the
                                 file f was loaded from (`checkpoint`, empty where f was trained), the
                                 corrector's choice.
  matrix_<m>.csv                 rows = class, columns = excluded class, NaN-aware mean over seeds;
  matrix_<m>_std.csv             their sample std, written when some fold has several seeds.
  folds_over_seeds.csv           with several seeds: per fold each interval figure's mean, _std and, from 3
                                 seeds on, its t-interval _lo and _hi.
  tpr_h_power.csv (+ _std)       the TPR_h matrix plus `full` (TPR_f of the class in fold none) and `P`.
  heatmap_<m>.png                the matrices, the excluded class's own cell (class j, fold j) outlined.
  training_curves.png            train loss and validation accuracy per epoch, one line per fold x seed,
                                 the kept epoch starred; results without a training history are left out.
  methods.csv                    one row per fold x seed x method (each corrector kind and detector of the
                                 results' `methods`) in the folds with an excluded class: Gain of that class,
                                 mean and pooled Harm, ΔFPR, balanced accuracy of h (each with _lo and _hi),
                                 harm_bound, test_harm and harm_held as in folds.csv, accuracy
                                 of h, auroc, aupr, fpr_at_95_tpr of its novelty score (detection_na: why
                                 empty), the paired McNemar tests against the published kind on recovery and
                                 correctness (p, Holm p, ties_best), seconds.
  methods_gain_harm.png          Gain against Harm, one point per method and fold (with several methods).
  roc_curves.png                 every method's ROC curve, a panel per fold (with several methods).
  frontier.csv                   per fold x seed x tau: the published corrector's Gain (the excluded class's;
                                 the mean Gain in the full model), pooled, mean and worst Harm on test, `chosen`
                                 its tau.
  frontier.png                   that curve, Gain against Harm, a panel per fold, the chosen tau starred and
                                 the certified bound (corrector.max_harm) drawn.
  cost.csv                       per fold x seed: the corrector's search and refit seconds beside the base
                                 net's training seconds, their ratio, and the excluded class's TPR under h
                                 and under the full model (the retraining reference).
  report.md                      all of it, classes named by the dataset's names ("1 Surprise", "0 airplane");
                                 the CSV and Parquet files keep the class labels other tools join on.
"""

METRICS_PARQUET = "metrics.parquet"
METRICS_CSV = "metrics.csv"
FOLDS = "folds.csv"
FOLDS_OVER_SEEDS = "folds_over_seeds.csv"
POWER = "tpr_h_power"
"""The stem of the TPR_h and power table: see `csv`."""
TRAINING_CURVES = "training_curves.png"
METHODS = "methods.csv"
GAIN_HARM = "methods_gain_harm.png"
ROC_CURVES = "roc_curves.png"
COST = "cost.csv"
FRONTIER = "frontier.csv"
FRONTIER_PLOT = "frontier.png"
MARKDOWN = "report.md"


def matrix(metric: str) -> str:
    """The stem of a metric's class x fold matrix: see `csv`."""
    return f"matrix_{metric}"


def csv(stem: str, std: bool = False) -> str:
    """A class x fold table's file: its mean over seeds, or with `std` their sample std."""
    return f"{stem}_std.csv" if std else f"{stem}.csv"


def heatmap(metric: str) -> str:
    return f"heatmap_{metric}.png"
