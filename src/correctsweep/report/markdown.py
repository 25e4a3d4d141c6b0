"""report.md: one function of the Report per section, in the order they appear."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from correctsweep import stats
from correctsweep.metrics import format_value
from correctsweep.report import files
from correctsweep.report.build import Report
from correctsweep.report.labels import class_label, named, own_cells
from correctsweep.report.tables import MATRICES, OverSeeds
from correctsweep.stats import Interval
from correctsweep.trust import DETECTION, FOLD_INTERVALS, METHOD_INTERVALS, seed_text

FOLD_OTHER = ["accuracy_f", "accuracy_h", "balanced_accuracy_f_trained", "full_f_same_classes", "tau",
              "search_seconds"]
"""folds.csv's numbers without an interval, averaged over seeds as they are (McNemar's p is not)."""
METHOD_NUMBERS = ["gain_excluded", "macro_harm", "macro_dfpr", "balanced_accuracy_h", "accuracy_h", *DETECTION,
                  "seconds"]
"""methods.csv's numbers averaged over folds and seeds."""


def escape(text) -> str:
    """`text` shown literally in a markdown line or table cell: class names come from the data, so HTML, a line
    break or a `|` in one must not become markup, a new line or a new column."""
    return " ".join(html.escape(str(text), quote=False).replace("|", "\\|").splitlines())


def _label(label, names: dict[int, str]) -> str:
    return escape(class_label(label, names))


def markdown_table(mean: pd.DataFrame, std: pd.DataFrame | None = None, mark_own: bool = False) -> str:
    """Numbers via format_value ('n/a' for NaN or NA), shown as 'mean ± std' where a std is defined;
    with mark_own, the cells whose row and column name the same class in bold. Every label and cell escaped."""
    show = lambda v: format_value(v) if isinstance(v, float) else "n/a" if v is pd.NA else escape(v)
    text = mean.map(show)
    if std is not None:
        std = std.reindex_like(mean)
        text = text.where(std.isna(), text + " ± " + std.map(show))
    if mark_own:
        text = text.where(~own_cells(text), "**" + text + "**")
    lines = ["| " + " | ".join(map(escape, [mean.index.name or "", *mean.columns])) + " |",
             "|" + "---|" * (mean.shape[1] + 1)]
    lines += ["| " + " | ".join([escape(i), *map(str, row)]) + " |" for i, row in zip(mean.index, text.to_numpy())]
    return "\n".join(lines)


def report_markdown(report: Report) -> str:
    sections = (_summary, _headline, _missing, _per_fold_over_seeds, _per_fold_and_seed, _training_curves,
                _matrices, _power, _methods, _cost, _files)
    return "\n\n".join(part for section in sections for part in section(report)) + "\n"


def _summary(r: Report) -> list[str]:
    seeds = r.folds.groupby("fold", sort=False).seed.agg(lambda s: ", ".join(map(str, s)))
    cfg = r.config
    return [f"# correctsweep report: {r.spec.name}",
            f"Run directory `{r.run_dir}`: {len(r.folds)} fold × seed results ("
            + "; ".join(f"fold {_label(f, r.names)} seed {s}" for f, s in seeds.items()) + f"); {len(r.names)} "
            f"classes; base net {', '.join(r.nets)}; corrector objective "
            f"`{r.spec.corrector.objective}`. Folds are named by their excluded class. Figures are on `test`, "
            "computed from the per-image record `predictions/` alone; `0.457 [0.41, 0.50]` is a figure and its "
            f"{cfg.level:.0%} stratified bootstrap interval over the test images ({cfg.bootstrap} resamples, f and h "
            "resampled together); n/a marks a ratio with a zero denominator or a fold without results, "
            "`n/a (reason)` a figure undefined in that fold"
            + (", and a ± b is the mean ± sample std over seeds." if r.several else ".")]


def _headline(r: Report) -> list[str]:
    """Per fold: what the published corrector recovers, what it breaks, and the bound it was certified with."""
    cfg = r.spec.corrector
    by_fold = r.folds.groupby("fold", sort=False)
    table = by_fold[["gain_excluded", "macro_harm", "pooled_harm", "test_harm"]].mean()
    table["bound"] = by_fold.harm_bound.first()
    held = by_fold.harm_held.agg(lambda v: "—" if v.isna().all() else f"{int(v.dropna().sum())} of {v.notna().sum()}")
    shown = table.rename(columns={"gain_excluded": "Gain", "macro_harm": "mean Harm", "pooled_harm": "pooled Harm",
                                  "test_harm": "worst Harm", "bound": "certified bound"})
    shown["held"] = held
    if cfg.harm_measure != "worst":  # the bound's own measure is one of the two columns already
        shown = shown.drop(columns="worst Harm")
    if r.certifies:
        results = r.folds.dropna(subset=["harm_bound"])
        plain = results[results.tau == float("inf")]
        text = ("The published corrector's Gain of the excluded class (the mean Gain in fold none), mean Harm over "
                "classes and pooled Harm (the share of all of f's correct answers h breaks), on test, beside the "
                f"bound certified for its tau: {cfg.harm_measure} Harm at most {cfg.max_harm} with probability at "
                f"least {cfg.confidence:.0%}. **The bound held in {int(results.harm_held.sum())} of {len(results)} "
                "fold × seed results.**")
        if len(plain):
            text += " No tau certified in " + ", ".join(f"fold {f} seed {s}" for f, s in zip(plain.fold, plain.seed)) \
                + ": h = f there."
    else:
        text = ("The published corrector's Gain of the excluded class (the mean Gain in fold none), mean and pooled "
                "Harm on test. **No bound on Harm is certified**: tau is the search's best on `correct`; set "
                "corrector.max_harm (e.g. 0.05) to certify it. ")
        shown = shown.drop(columns=["certified bound", "worst Harm", "held"], errors="ignore")
    return ["## Headline", text, markdown_table(named(shown, r.names))] + (
        [f"![Gain against Harm over tau]({files.FRONTIER_PLOT})"] if len(r.frontier) else [])


def _missing(r: Report) -> list[str]:
    stopped = [f"{r.stopped} `search` sample(s) stopped early by the scheduler are left out "
               "(`results/fold=J/seed=S.stopped/`)."] if r.stopped else []
    if not r.missing:
        return stopped
    return ["**Missing results** (expected from spec.yaml folds × seeds, not found): " + ", ".join(
        f"fold {f} seed {s} (`results/fold={f}/seed={s}.json`)" for f, s in r.missing) + ".", *stopped]


def _per_fold_over_seeds(r: Report) -> list[str]:
    if not r.several:
        return []
    by_fold = r.folds.groupby("fold", sort=False)[FOLD_OTHER]
    shown = pd.concat([r.seeds.map(seed_text), by_fold.mean()], axis=1)
    return ["## Per fold (mean over seeds)",
            f"Mean ± std over seeds; [lo, hi] is the {r.config.level:.0%} t-interval of the mean where the fold has "
            f"3 seeds or more (`{files.FOLDS_OVER_SEEDS}`).",
            markdown_table(named(shown, r.names), named(by_fold.std(), r.names))]


def _fold_text(cells: pd.DataFrame) -> pd.DataFrame:
    text = cells.copy()
    for name in FOLD_INTERVALS:
        text[name] = text[name].map(str)
    text["mcnemar_p"] = text.mcnemar_p.map(lambda p: f"{p:.2g}")
    return text.set_index("fold")


def _per_fold_and_seed(r: Report) -> list[str]:
    return ["## Per fold and seed",
            "The excluded class's Gain and TPR under h, the corrector power P (TPR_h of the excluded class ÷ its "
            "TPR under the same seed's full model, on the same test images), the mean Harm and ΔFPR over classes, "
            "balanced accuracy of the base net f and of the corrected h (each with its interval), accuracy of f "
            "and h, `mcnemar_p` (the exact McNemar test of f against h on which test images each gets right), "
            "f's balanced accuracy on the classes it was trained on beside the full model's on the same classes "
            "(a fold far below it had a collapsed or under-trained f), the base net's epochs run and kept epoch, "
            "the checkpoint f was loaded from (base_net.weights; empty: trained here) and the corrector's choice.",
            markdown_table(named(_fold_text(r.fold_cells.drop(columns="excluded_name")), r.names))]


def _training_curves(r: Report) -> list[str]:
    if not r.has_training_curves:
        return []
    without = r.folds[r.folds.epochs_run.isna()]
    text = ("The base net's train loss and validation accuracy per epoch, one line per fold × seed (colour: "
            "fold, line style: seed); a star marks the kept epoch (best validation accuracy).")
    if len(without):
        text += " Left out, as their results hold no training record (a net reused from an older run): " + \
            ", ".join(f"fold {f} seed {s}" for f, s in zip(without.fold, without.seed)) + "."
    return ["## Training curves", text, f"![Training curves]({files.TRAINING_CURVES})"]


def _class_fold_table(table: OverSeeds, r: Report) -> str:
    """A class x fold table, each fold's excluded class in bold, with its std over seeds where some fold has
    several."""
    return markdown_table(named(table.mean, r.names), named(table.std, r.names) if r.several else None,
                          mark_own=True)


def _matrices(r: Report) -> list[str]:
    if not r.matrices:
        return []
    out = ["## Matrices", "Rows: class; columns: the fold's excluded class. The bold cell (outlined in the "
           "heatmap) is the excluded class in its own fold."]
    for m, table in r.matrices.items():
        title = MATRICES[m]
        out += [f"### {title}", f"![{title}]({files.heatmap(m)})", _class_fold_table(table, r)]
    return out


def _power(r: Report) -> list[str]:
    if r.power is None:
        return []
    return ["## TPR of h by class and excluded class (the paper's Table 4)",
            "Rows: class; columns: the fold's excluded class (bold: the class itself), then `full`: the class's "
            "TPR under the full model (fold none), and `P` = TPR_h of class i in fold i ÷ `full` (ratio of "
            "the seed means), the corrector power.", _class_fold_table(r.power, r)]


def _mark(text: str, ties: pd.Series) -> str:
    """'≈' after a figure where the method is not significantly different from the best in every seed."""
    return text + " ≈" if ties.notna().any() and ties.dropna().astype(bool).all() else text


def _over_seeds(cells: pd.Series, level: float, digits: int = 3) -> str:
    """One method's figure in one fold: its interval (an Interval cell) or value with one seed, else over seeds."""
    if len(cells) == 1:
        only = cells.iloc[0]
        return str(only) if isinstance(only, Interval) else format_value(float(only), digits)
    values = [c.value if isinstance(c, Interval) else c for c in cells]
    return seed_text(stats.seed_summary([np.nan if v is None else v for v in values], level))


def _method_text(rows: pd.DataFrame, level: float) -> pd.DataFrame:
    """The methods of one fold, as text: intervals (or over seeds), the ≈ marks, detection n/a reasons and,
    with one seed, the Holm-corrected p against the published kind."""
    out = {}
    for method, group in rows.groupby("method", sort=False):
        row = {k: _over_seeds(group[k], level) for k in [*METHOD_INTERVALS, "accuracy_h", *DETECTION]}
        row["gain_excluded"] = _mark(row["gain_excluded"], group.ties_best_recovery)
        row["accuracy_h"] = _mark(row["accuracy_h"], group.ties_best_correct)
        if group.detection_na.notna().all():  # undefined in every seed
            row["auroc"] = f"n/a ({'; '.join(group.detection_na.unique())})"
        if len(group) == 1:
            p = lambda x: "—" if np.isnan(x) else f"{x:.2g}"
            row |= {k: p(group[k].iloc[0]) for k in ("p_recovery_holm", "p_correct_holm")}
        out[method] = row | {"seconds": _over_seeds(group.seconds, level, 2)}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("method")


def _methods(r: Report) -> list[str]:
    if not r.compares_methods:
        return []
    cfg = r.config
    level = f"{cfg.level:.0%}"
    out = ["## Correctors and detectors",
           "Every corrector kind and label-free detector of the run, on the same test images of each fold with an "
           "excluded class: the excluded class's Gain (its recovery: f never predicts it), the mean Harm and ΔFPR "
           "over classes, the balanced accuracy and accuracy of h, and seconds (a kind: its search and refit; a "
           "detector: its fit and threshold). Kinds choose tau and the policy by CV inside `correct`; a detector "
           "flags the excluded class (new_class) where its novelty score passes a threshold chosen on `correct`, "
           "and is never fitted on that class. "
           f"[lo, hi]: {level} stratified bootstrap interval over the test images ({cfg.bootstrap} resamples, f and "
           "h resampled together). `auroc`, `aupr` (the excluded class positive) and `fpr_at_95_tpr` rank the "
           "images by the method's novelty score, at no threshold (a kind's: g's probability of the class). "
           "Exact McNemar tests on the same images, Holm-corrected within a fold: `p_recovery_holm` (of the excluded "
           "class's images, labelled as it or not) and `p_correct_holm` (every image right or not) test each method "
           f"against the published kind ({r.published}); ≈ marks the Gain (recovery) and accuracy "
           f"(correctness) of the methods not significantly different at {1 - cfg.level:.2g} from the best method "
           "there, the best included."
           + (" Per fold: mean ± std over seeds ([lo, hi] a t-interval with 3 seeds or more); ≈ where it holds in "
              f"every seed; the p-values per seed are in `{files.METHODS}`." if r.several else "")]
    balanced_f = r.folds.groupby("fold", sort=False).balanced_accuracy_f.mean()
    for fold, rows in r.method_cells.groupby("fold", sort=False):
        out += [f"### Fold {_label(fold, r.names)} (f: balanced accuracy {format_value(balanced_f[fold])})",
                markdown_table(_method_text(rows, cfg.level))]
    overall = r.methods.groupby("method", sort=False)[METHOD_NUMBERS]
    out += ["### Every fold: mean ± std over folds and seeds", markdown_table(overall.mean(), overall.std()),
            f"![Gain against Harm]({files.GAIN_HARM})",
            "ROC curves of the novelty scores, a panel per fold (a score without a curve is left out: its AUROC "
            "is n/a).", f"![ROC curves]({files.ROC_CURVES})"]
    return out


def _cost(r: Report) -> list[str]:
    text = ("Per fold and seed, the published corrector's search and refit seconds beside the seconds the fold's "
            "base net f took to train (n/a for a net reused from a run that predates the training record), and "
            "`correct_over_train` = (search + refit) / train. Retraining f with the excluded class costs about the "
            "full model's training (fold none's `train_seconds`). `tpr_h_excluded` is the excluded class's TPR "
            "under h in its fold, `full_tpr_excluded` its TPR under the full model (fold none, mean over seeds): "
            "the retraining reference P uses.")
    return ["## Cost of correcting against retraining", text, markdown_table(named(r.cost.set_index("fold"), r.names))]


def _files(r: Report) -> list[str]:
    return ["## Files",
            f"`{files.METRICS_PARQUET}` / `{files.METRICS_CSV}`: long format (run, fold, seed, class, metric, value); "
            f"summary metrics have an empty class. `{files.FOLDS}` (each interval as `<figure>_lo`, `<figure>_hi`, "
            f"empty where it is n/a), `{files.csv(files.matrix('<metric>'))}`, `{files.csv(files.POWER)}`"
            + (f" and their `{files.csv('', std=True)}`, `{files.FOLDS_OVER_SEEDS}`" if r.several else "")
            + f", `{files.METHODS}` (one row per fold, seed and method, with intervals, detection metrics and tests), "
            f"`{files.COST}`: the tables above, with class labels. Every figure is recomputable from "
            "`predictions/fold=J/seed=S/split=test/*.parquet`."]
