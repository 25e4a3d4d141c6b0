"""Aggregate a run directory's results into tables, matrices, heatmaps and a Markdown report (SPEC §3).

Reads RUN_DIR/spec.yaml, RUN_DIR/results/fold=J/seed=S.json (one per finished fold x seed) and the test
predictions file each result names (see `predictions`), whence every interval, test and detection metric
(see `trust`), and replaces RUN_DIR/report/ with:
  metrics.parquet, metrics.csv   long format: run, fold, seed, class, metric, value. Every per-class
                                 metric, plus each summary metric (accuracy_f, macro_gain, ...) with
                                 class null, as it belongs to no class.
  folds.csv                      one row per fold x seed: the excluded class's name, Gain and TPR_h, P, mean
                                 harm and dfpr over classes, balanced accuracies of f and h, each with
                                 <figure>_lo and <figure>_hi (report.level bootstrap interval, empty
                                 where n/a), accuracies of f and h, McNemar's p of f against h
                                 (mcnemar_p), f's balanced accuracy on its
                                 trained classes beside the full model's on them, the base net's epochs_run
                                 and best_epoch (empty where the result has no training record), the
                                 corrector's choice.
  matrix_<m>.csv                 rows = class, columns = excluded class, NaN-aware mean over seeds;
  matrix_<m>_std.csv             their sample std, written when some fold has several seeds.
  folds_over_seeds.csv           with several seeds: per fold each interval figure's mean, _std and, from 3
                                 seeds on, its t-interval _lo and _hi.
  tpr_h_power.csv (+ _std)       the TPR_h matrix plus `full` (TPR_f of the class in fold none) and `P`.
  heatmap_<m>.png                the matrices, the excluded class's own cell (class j, fold j) outlined.
  training_curves.png            train loss and validation accuracy per epoch, one line per fold x seed,
                                 the kept epoch starred; results without a training history are left out.
  methods.csv                    one row per fold x seed x method (each corrector kind and baseline of the
                                 results' `methods`) in the folds with an excluded class: Gain of that class,
                                 mean Harm and ΔFPR, balanced accuracy of h (each with _lo and _hi), accuracy
                                 of h, auroc, aupr, fpr_at_95_tpr of its novelty score (detection_na: why
                                 empty), the paired McNemar tests against the published kind on recovery and
                                 correctness (p, Holm p, ties_best), seconds.
  methods_gain_harm.png          Gain against Harm, one point per method and fold (with several methods).
  roc_curves.png                 every method's ROC curve, a panel per fold (with several methods).
  cost.csv                       per fold x seed: the corrector's search and refit seconds beside the base
                                 net's training seconds, their ratio, and the excluded class's TPR under h
                                 and under the full model (the retraining reference).
  report.md                      all of it, classes named by the dataset's names ("1 Surprise", "0 airplane");
                                 the CSV and Parquet files keep the class labels other tools join on.
P_i is a ratio of seed means, TPR_h,i in fold i / TPR_f,i in fold none: per-seed ratios would pair
unrelated nets and blow up wherever one seed's full model has a TPR near 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from correctsweep import predictions, stats
from correctsweep.atomic import atomic_dir
from correctsweep.config import ReportConfig, Spec, load_spec
from correctsweep.data import class_title
from correctsweep.errors import CorrectsweepError
from correctsweep.keys import sweep_key
from correctsweep.layout import RunLayout
from correctsweep.metrics import format_value, nanmean
from correctsweep.results import TrialResult
from correctsweep.stats import Interval
from correctsweep.trust import (
    DETECTION,
    FOLD_INTERVALS,
    METHOD_INTERVALS,
    FoldTrust,
    expand,
    fold_trust,
    method_rows,
    seed_text,
)

MATRICES = {"retention": "Retention", "harm": "Harm", "gain": "Gain", "dfpr": "ΔFPR", "tpr_h": "TPR_h"}
METHOD_NUMBERS = ["gain_excluded", "mean_harm", "mean_dfpr", "balanced_accuracy_h", "accuracy_h", *DETECTION,
                  "seconds"]
METHOD_COLUMNS = ["fold", "seed", "method", "family", *METHOD_INTERVALS, "accuracy_h", *DETECTION, "detection_na",
                  "p_recovery", "p_recovery_holm", "ties_best_recovery", "p_correct", "p_correct_holm",
                  "ties_best_correct", "seconds"]
COST_NUMBERS = ["train_seconds", "search_seconds", "refit_seconds", "correct_over_train", "tpr_h_excluded",
                "full_tpr_excluded"]
FOLD_OTHER = ["accuracy_f", "accuracy_h", "balanced_accuracy_f_trained", "full_f_same_classes", "tau",
              "search_seconds"]
"""folds.csv's numbers without an interval, averaged over seeds as they are (McNemar's p is not)."""


def load_run(run_dir: Path) -> tuple[Spec, list[TrialResult]]:
    """The run's spec and every result under results/; a one-line error when there is none."""
    layout = RunLayout(Path(run_dir))
    paths = layout.result_files()
    if not paths:
        raise CorrectsweepError(f"no results in {layout.root / 'results'}; run `correctsweep trial SPEC --fold J` "
                                f"or `correctsweep sweep SPEC` with this run directory as <storage>/<name> first")
    if not layout.spec_file.is_file():
        raise CorrectsweepError(f"{layout.root} has results but no spec.yaml; rerun one trial of its spec to write it")
    spec = load_spec(layout.spec_file, stored=True)
    return spec, _one_per_fold_seed([TrialResult.read(p) for p in paths], sweep_key(spec))


def _one_per_fold_seed(results: list[TrialResult], key: str) -> list[TrialResult]:
    """The result of each fold x seed: when a `search` left several samples of one, the sample of this
    sweep's settings with the best cross-validated corrector objective (never a test figure)."""
    rank = lambda r: (r.sweep_key == key, r.corrector.cv_score)  # this sweep's first
    best = {}
    for r in results:
        at = (r.fold, r.seed)
        if at not in best or rank(r) > rank(best[at]):
            best[at] = r
    return list(best.values())


def class_label(label, names: dict[int, str]) -> str:
    """'1 Surprise' for a class or a fold named by its excluded class; other labels ('none', 'full',
    'P') and classes without a name unchanged."""
    text = str(label)
    return class_title(int(text), names) if text.isascii() and text.isdigit() else text


def named(table: pd.DataFrame, names: dict[int, str]) -> pd.DataFrame:
    label = lambda x: class_label(x, names)
    return table.rename(index=label, columns=label)


def own_cells(table: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the cells (class j, fold j): the excluded class in its own fold."""
    return np.equal.outer(table.index.astype(str), table.columns.astype(str))


def fold_order(fold: str) -> tuple[bool, int]:
    """Sort key: excluded classes in numeric order, then the full model."""
    return fold == "none", 0 if fold == "none" else int(fold)


def result_order(result: TrialResult) -> tuple:
    return fold_order(result.fold), result.seed


def long_table(results: list[TrialResult], run: str) -> pd.DataFrame:
    per_class = pd.DataFrame([row | {"fold": r.fold, "seed": r.seed} for r in results for row in r.per_class])
    per_class = per_class.melt(["fold", "seed", "class"], var_name="metric")
    summary = pd.DataFrame([r.summary | {"fold": r.fold, "seed": r.seed} for r in results])
    table = pd.concat([per_class, summary.melt(["fold", "seed"], var_name="metric")], ignore_index=True)
    table = table.assign(run=run).astype({"class": "Int64", "seed": "int64", "value": "float64"})
    return table[["run", "fold", "seed", "class", "metric", "value"]]


def _trained_balanced_accuracy(result: TrialResult, excluded) -> float:
    """Mean TPR of f over the classes other than `excluded`: the balanced accuracy on a fold's trained
    classes (a class's TPR counts only its own images, so restricting the images changes nothing)."""
    return nanmean([c["tpr_f"] for c in result.per_class if c["class"] != excluded])


def fold_table(results: list[TrialResult], trusts: dict[tuple[str, int], FoldTrust]) -> pd.DataFrame:
    """One row per fold x seed, trust.FOLD_INTERVALS as Interval cells (from the fold's predictions) and
    McNemar's p of f against h. `balanced_accuracy_f_trained` is f's balanced accuracy on the classes it
    was trained on and `full_f_same_classes` the full model's (same seed) on those classes: a fold far
    below the full model there had a collapsed or under-trained f, whose Gain is not the corrector's."""
    full = {r.seed: r for r in results if r.excluded is None}
    rows = []
    for r in sorted(results, key=result_order):
        c, t, found = r.corrector, r.train or {}, trusts[(r.fold, r.seed)]
        rows.append({"fold": r.fold, "seed": r.seed, "excluded_name": r.names.get(r.excluded, ""), **found.intervals,
                     "accuracy_f": r.summary["accuracy_f"],
                     "accuracy_h": r.summary["accuracy_h"], "mcnemar_p": found.mcnemar_p,
                     "balanced_accuracy_f_trained": _trained_balanced_accuracy(r, r.excluded),
                     "full_f_same_classes": (_trained_balanced_accuracy(full[r.seed], r.excluded)
                                             if r.seed in full else np.nan),
                     "epochs_run": t.get("epochs_run"),
                     "best_epoch": t.get("best_epoch"),
                     "policy": c.policy, "tau": c.tau, "search_seconds": c.search_seconds})
    return pd.DataFrame(rows).astype({"epochs_run": "Int64", "best_epoch": "Int64"})


def seeds_table(folds: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per fold, each of trust.FOLD_INTERVALS over seeds (stats.SeedSummary cells): mean, std and, with 3
    seeds or more, a t-interval."""
    return folds.groupby("fold", sort=False)[FOLD_INTERVALS].agg(lambda v: stats.seed_summary(v, level))


def seeds_numbers(summaries: pd.DataFrame) -> pd.DataFrame:
    """seeds_table as numbers: per figure its mean, _std, _lo and _hi (NaN where undefined)."""
    number = lambda x: np.nan if x is None else x
    columns = {}
    for name in FOLD_INTERVALS:
        cells = summaries[name]
        columns |= {name: cells.map(lambda s: number(s.mean)), f"{name}_std": cells.map(lambda s: number(s.std)),
                    f"{name}_lo": cells.map(lambda s: number(s.interval.lo)),
                    f"{name}_hi": cells.map(lambda s: number(s.interval.hi))}
    return pd.DataFrame(columns).reset_index()


def matrices(long: pd.DataFrame, classes: list[int], folds: list[int]) -> dict[str, tuple[pd.DataFrame, ...]]:
    """'matrix_<m>' -> (mean, std) over seeds; rows = class, columns = excluded class."""
    cells = long[(long.fold != "none") & long["class"].notna()]
    stats = cells.astype({"fold": int}).groupby(["metric", "class", "fold"]).value.agg(["mean", "std"])
    grid = pd.MultiIndex.from_product([list(MATRICES), classes, folds], names=stats.index.names)
    stats = stats.reindex(grid).sort_index()  # a fold without results is a column of NaN, not a missing one
    return {f"matrix_{m}": (stats.loc[m, "mean"].unstack(), stats.loc[m, "std"].unstack()) for m in MATRICES}


def full_model_tpr(long: pd.DataFrame, classes: list[int]) -> pd.DataFrame:
    """Each class's TPR under the full model (fold none): columns mean and std over seeds."""
    full = long[(long.fold == "none") & (long.metric == "tpr_f") & long["class"].notna()]
    return full.groupby("class").value.agg(["mean", "std"]).reindex(classes)


def power_table(tpr_h: tuple[pd.DataFrame, pd.DataFrame], long: pd.DataFrame, classes: list[int]):
    """The TPR_h matrix (mean, std) with the full model's TPR and the corrector power P appended."""
    mean, std = tpr_h
    full = full_model_tpr(long, classes)
    own_fold = pd.Series(np.diag(mean.reindex(columns=classes).to_numpy()), index=full.index)
    power = (own_fold / full["mean"]).where(full["mean"] > 0)
    return (mean.assign(full=full["mean"].to_numpy(), P=power.to_numpy()),
            std.assign(full=full["std"].to_numpy(), P=np.nan))


def heatmap(path: Path, matrix: pd.DataFrame, title: str, names: dict[int, str], diverging: bool = False) -> Figure:
    # Figure without pyplot renders with Agg and leaves the process's backend alone.
    values = matrix.to_numpy(dtype=float)
    lim = 1.0
    if diverging and np.isfinite(values).any():  # a signed metric: centre the colour scale on 0
        lim = float(np.nanmax(np.abs(values))) or 1.0
    fig = Figure(figsize=(1.5 + 0.7 * values.shape[1], 1.2 + 0.5 * values.shape[0]))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r" if diverging else "viridis",
                      vmin=-lim if diverging else 0.0, vmax=lim)  # masked (NaN) cells stay blank
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            r, g, b, _ = image.cmap(image.norm(v))
            ax.text(j, i, format_value(v, 2), ha="center", va="center", fontsize=8,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    for i, j in np.argwhere(own_cells(matrix)):  # the cell each fold exists to measure
        # black on a white halo stands out on every colour of both colour maps
        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="black", linewidth=2.5,
                               path_effects=[patheffects.withStroke(linewidth=5, foreground="white")]))
    ax.set_xticks(range(values.shape[1]), labels=[class_label(c, names) for c in matrix.columns], rotation=30,
                  ha="right")
    ax.set_yticks(range(values.shape[0]), labels=[class_label(c, names) for c in matrix.index])
    ax.set(xlabel="excluded class (fold)", ylabel="class", title=title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def markdown_table(mean: pd.DataFrame, std: pd.DataFrame | None = None, mark_own: bool = False) -> str:
    """Numbers via format_value ('n/a' for NaN or NA), shown as 'mean ± std' where a std is defined;
    with mark_own, the cells whose row and column name the same class in bold."""
    show = lambda v: format_value(v) if isinstance(v, float) else "n/a" if v is pd.NA else str(v)
    text = mean.map(show)
    if std is not None:
        std = std.reindex_like(mean)
        text = text.where(std.isna(), text + " ± " + std.map(show))
    if mark_own:
        text = text.where(~own_cells(text), "**" + text + "**")
    lines = ["| " + " | ".join(map(str, [mean.index.name or "", *mean.columns])) + " |",
             "|" + "---|" * (mean.shape[1] + 1)]
    lines += ["| " + " | ".join(map(str, [i, *row])) + " |" for i, row in zip(mean.index, text.to_numpy())]
    return "\n".join(lines)


def training_curves(path: Path, results: list[TrialResult], names: dict[int, str]) -> Figure:
    """Train loss and validation accuracy per epoch, colour by fold and line style by seed, the kept
    epoch starred. Results without a training record (a net reused from an older run) are skipped."""
    fig = Figure(figsize=(12, 4.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    folds = sorted({r.fold for r in results}, key=fold_order)
    seeds = sorted({r.seed for r in results})
    for r in sorted(results, key=result_order):
        train = r.train or {}
        history = pd.DataFrame(train.get("history") or [])
        if history.empty:
            continue
        style = {"color": f"C{folds.index(r.fold) % 10}",
                 "linestyle": ["-", "--", ":", "-."][seeds.index(r.seed) % 4]}
        kept = history[history.epoch == train.get("best_epoch")]
        for ax, column in ((loss_ax, "train_loss"), (acc_ax, "val_accuracy")):
            ax.plot(history.epoch, history[column], label=f"fold {class_label(r.fold, names)} seed {r.seed}", **style)
            ax.plot(kept.epoch, kept[column], marker="*", markersize=13, markeredgecolor="black", color=style["color"])
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Base net: train loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Base net: validation accuracy (★ kept epoch)")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _table_sections(tables: dict, several: bool, names: dict[int, str]) -> list[str]:
    pick = lambda name: (named(tables[name][0], names), named(tables[name][1], names) if several else None)
    out = ["## Matrices", "Rows: class; columns: the fold's excluded class. The bold cell (outlined in the "
           "heatmap) is the excluded class in its own fold."]
    for m, title in MATRICES.items():
        out += [f"### {title}", f"![{title}](heatmap_{m}.png)", markdown_table(*pick(f"matrix_{m}"), mark_own=True)]
    out += ["## TPR of h by class and excluded class (the paper's Table 4)",
            "Rows: class; columns: the fold's excluded class (bold: the class itself), then `full`: the class's "
            "TPR under the full model (fold none), and `P` = TPR_h of class i in fold i ÷ `full` (ratio of "
            "the seed means), the corrector power.", markdown_table(*pick("tpr_h_power"), mark_own=True)]
    return out


def _curves_section(folds: pd.DataFrame) -> list[str]:
    without = folds[folds.epochs_run.isna()]
    if len(without) == len(folds):
        return []
    text = ("The base net's train loss and validation accuracy per epoch, one line per fold × seed (colour: "
            "fold, line style: seed); a star marks the kept epoch (best validation accuracy).")
    if len(without):
        text += " Left out, as their results hold no training record (a net reused from an older run): " + \
            ", ".join(f"fold {f} seed {s}" for f, s in zip(without.fold, without.seed)) + "."
    return ["## Training curves", text, "![Training curves](training_curves.png)"]


def methods_table(results: list[TrialResult], tests: dict[tuple[str, int], pd.DataFrame],
                  cfg: ReportConfig) -> pd.DataFrame:
    """One row per fold x seed x method (every corrector kind and baseline of a result's `methods`), in
    the folds with an excluded class: the only ones where baselines run and a Gain of it exists. Columns:
    trust.method_rows's, trust.METHOD_INTERVALS as Interval cells."""
    rows = [row for r in sorted(results, key=result_order) if r.excluded is not None and r.methods
            for row in method_rows(r, tests[(r.fold, r.seed)], cfg)]
    return pd.DataFrame(rows, columns=METHOD_COLUMNS)


def cost_table(results: list[TrialResult], long: pd.DataFrame, classes: list[int]) -> pd.DataFrame:
    """Per fold x seed: the published corrector's search and refit seconds beside the seconds f took to
    train, their ratio, and the excluded class's TPR under h and under the full model (fold none)."""
    full = full_model_tpr(long, classes)["mean"]
    rows = []
    for r in sorted(results, key=result_order):
        c, train = r.corrector, (r.train or {}).get("seconds", np.nan)
        rows.append({"fold": r.fold, "seed": r.seed, "kind": c.kind, "train_seconds": train,
                     "search_seconds": c.search_seconds, "refit_seconds": c.refit_seconds,
                     "correct_over_train": (c.search_seconds + c.refit_seconds) / train,
                     "tpr_h_excluded": r.per_class_value("tpr_h", r.excluded),
                     "full_tpr_excluded": full.get(r.excluded, np.nan)})
    return pd.DataFrame(rows).astype({name: float for name in COST_NUMBERS})


def gain_harm_plot(path: Path, methods: pd.DataFrame, names: dict[int, str]) -> Figure:
    """Excluded-class Gain against mean Harm, one point per method and fold (mean over seeds): up and to
    the left is better. Colour: method; circle: a corrector kind, square: a baseline."""
    points = methods.groupby(["method", "fold"], sort=False)[["gain_excluded", "mean_harm"]].mean().reset_index()
    families = methods.drop_duplicates("method").set_index("method").family
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for i, (method, group) in enumerate(points.groupby("method", sort=False)):
        ax.scatter(group.mean_harm, group.gain_excluded, s=60, color=f"C{i % 10}", label=method,
                   marker="o" if families[method] == "corrector" else "s", edgecolor="black")
        for _, row in group.iterrows():
            ax.annotate(class_label(row.fold, names), (row.mean_harm, row.gain_excluded), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)
    ax.set(xlabel="mean Harm over classes", ylabel="Gain of the excluded class",
           title="Correctors and baselines: Gain against Harm (one point per fold)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def roc_curves(path: Path, results: list[TrialResult], tests: dict[tuple[str, int], pd.DataFrame],
               names: dict[int, str]) -> Figure:
    """ROC curves of every method's novelty score for the excluded class, a panel per fold with one: colour by
    method (20 colours: a run has up to 3 kinds and 15 detectors), line style by seed. A score whose curve is
    undefined (no image of the class, a constant score) is left out, as its AUROC is n/a."""
    chosen = sorted((r for r in results if r.excluded is not None and r.methods), key=result_order)
    folds = sorted({r.fold for r in chosen}, key=fold_order)
    seeds = sorted({r.seed for r in chosen})
    methods = list(dict.fromkeys(m for r in chosen for m in r.methods))
    columns = min(4, len(folds))
    rows = -(-len(folds) // columns)
    fig = Figure(figsize=(3.6 * columns + 2.2, 3.4 * rows))
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).ravel()
    for r in chosen:
        ax, test = axes[folds.index(r.fold)], tests[(r.fold, r.seed)]
        positive = test.label == r.excluded
        for name in r.methods:
            score = test[f"score_{name}"]
            if stats.detection_metrics(positive, score).reason is None:
                fpr, tpr, _ = roc_curve(positive, score)
                ax.plot(fpr, tpr, color=colormaps["tab20"](methods.index(name) % 20), linewidth=1.2,
                        linestyle=["-", "--", ":", "-."][seeds.index(r.seed) % 4],
                        label=name if r.seed == seeds[0] else None)
    for ax, fold in zip(axes, folds):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="FPR (other classes flagged)", ylabel="TPR (excluded class flagged)",
               title=f"fold {class_label(fold, names)}", xlim=(0, 1), ylim=(0, 1.02))
    for ax in axes[len(folds):]:
        ax.set_visible(False)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


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


def _methods_section(cells: pd.DataFrame, methods: pd.DataFrame, folds: pd.DataFrame, several: bool,
                     names: dict[int, str], cfg: ReportConfig, published: str) -> list[str]:
    level = f"{cfg.level:.0%}"
    out = ["## Correctors and baselines",
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
           f"against the published kind ({published}); ≈ marks the Gain (recovery) and accuracy "
           f"(correctness) of the methods not significantly different at {1 - cfg.level:.2g} from the best method "
           "there, the best included."
           + (" Per fold: mean ± std over seeds ([lo, hi] a t-interval with 3 seeds or more); ≈ where it holds in "
              "every seed; the p-values per seed are in `methods.csv`." if several else "")]
    balanced_f = folds.groupby("fold", sort=False).balanced_accuracy_f.mean()
    for fold, rows in cells.groupby("fold", sort=False):
        out += [f"### Fold {class_label(fold, names)} (f: balanced accuracy {format_value(balanced_f[fold])})",
                markdown_table(_method_text(rows, cfg.level))]
    overall = methods.groupby("method", sort=False)[METHOD_NUMBERS]
    out += ["### Every fold: mean ± std over folds and seeds", markdown_table(overall.mean(), overall.std()),
            "![Gain against Harm](methods_gain_harm.png)",
            "ROC curves of the novelty scores, a panel per fold (a score without a curve is left out: its AUROC "
            "is n/a).", "![ROC curves](roc_curves.png)"]
    return out


def _cost_section(cost: pd.DataFrame, names: dict[int, str]) -> list[str]:
    text = ("Per fold and seed, the published corrector's search and refit seconds beside the seconds the fold's "
            "base net f took to train (n/a for a net reused from a run that predates the training record), and "
            "`correct_over_train` = (search + refit) / train. Retraining f with the excluded class costs about the "
            "full model's training (fold none's `train_seconds`). `tpr_h_excluded` is the excluded class's TPR "
            "under h in its fold, `full_tpr_excluded` its TPR under the full model (fold none, mean over seeds): "
            "the retraining reference P uses.")
    return ["## Cost of correcting against retraining", text, markdown_table(named(cost.set_index("fold"), names))]


@dataclass
class Uncertain:
    """The tables with Interval (and SeedSummary) cells that the report's text shows; their numbers are the
    folds and methods tables."""

    folds: pd.DataFrame
    """fold_table."""
    methods: pd.DataFrame
    """methods_table."""
    seeds: pd.DataFrame
    """seeds_table."""
    cfg: ReportConfig
    published: str
    """The published corrector kind(s)."""


def _fold_text(cells: pd.DataFrame) -> pd.DataFrame:
    text = cells.copy()
    for name in FOLD_INTERVALS:
        text[name] = text[name].map(str)
    text["mcnemar_p"] = text.mcnemar_p.map(lambda p: f"{p:.2g}")
    return text.set_index("fold")


def report_markdown(spec: Spec, run_dir: Path, folds: pd.DataFrame, tables: dict, missing: list, several: bool,
                    methods: pd.DataFrame, cost: pd.DataFrame, names: dict[int, str], nets: list[str],
                    uncertain: Uncertain) -> str:
    seeds = folds.groupby("fold", sort=False).seed.agg(lambda s: ", ".join(map(str, s)))
    cfg = uncertain.cfg
    out = [f"# correctsweep report: {spec.name}",
           f"Run directory `{run_dir}`: {len(folds)} fold × seed results ("
           + "; ".join(f"fold {class_label(f, names)} seed {s}" for f, s in seeds.items()) + f"); {len(names)} "
           f"classes; base net {', '.join(nets)}; corrector objective "
           f"`{spec.corrector.objective}`. Folds are named by their excluded class. Figures are on `test`, "
           "computed from the per-image record `predictions/` alone; `0.457 [0.41, 0.50]` is a figure and its "
           f"{cfg.level:.0%} stratified bootstrap interval over the test images ({cfg.bootstrap} resamples, f and h "
           "resampled together); n/a marks a ratio with a zero denominator or a fold without results, "
           "`n/a (reason)` a figure undefined in that fold"
           + (", and a ± b is the mean ± sample std over seeds." if several else ".")]
    if missing:
        out += ["**Missing results** (expected from spec.yaml folds × seeds, not found): " + ", ".join(
            f"fold {f} seed {s} (`results/fold={f}/seed={s}.json`)" for f, s in missing) + "."]
    if several:
        by_fold = folds.groupby("fold", sort=False)[FOLD_OTHER]
        shown = pd.concat([uncertain.seeds.map(seed_text), by_fold.mean()], axis=1)
        out += ["## Per fold (mean over seeds)",
                f"Mean ± std over seeds; [lo, hi] is the {cfg.level:.0%} t-interval of the mean where the fold has "
                "3 seeds or more (`folds_over_seeds.csv`).",
                markdown_table(named(shown, names), named(by_fold.std(), names))]
    out += ["## Per fold and seed",
            "The excluded class's Gain and TPR under h, the corrector power P (TPR_h of the excluded class ÷ its "
            "TPR under the same seed's full model, on the same test images), the mean Harm and ΔFPR over classes, "
            "balanced accuracy of the base net f and of the corrected h (each with its interval), accuracy of f "
            "and h, `mcnemar_p` (the exact McNemar test of f against h on which test images each gets right), "
            "f's balanced accuracy on the classes it was trained on beside the full model's on the same classes "
            "(a fold far below it had a collapsed or under-trained f), the base net's epochs run and kept epoch, "
            "and the corrector's choice.",
            markdown_table(named(_fold_text(uncertain.folds.drop(columns="excluded_name")), names))]
    out += _curves_section(folds)
    if "matrix_gain" in tables:
        out += _table_sections(tables, several, names)
    if methods.method.nunique() > 1:
        out += _methods_section(uncertain.methods, methods, folds, several, names, cfg, uncertain.published)
    out += _cost_section(cost, names)
    out += ["## Files", "`metrics.parquet` / `metrics.csv`: long format (run, fold, seed, class, metric, value); "
            "summary metrics have an empty class. `folds.csv` (each interval as `<figure>_lo`, `<figure>_hi`, "
            "empty where it is n/a), `matrix_<metric>.csv`, `tpr_h_power.csv`"
            + (" and their `_std.csv`, `folds_over_seeds.csv`" if several else "")
            + ", `methods.csv` (one row per fold, seed and method, with intervals, detection metrics and tests), "
            "`cost.csv`: the tables above, with class labels. Every figure is recomputable from "
            "`predictions/fold=J/seed=S/split=test/*.parquet`."]
    return "\n\n".join(out) + "\n"


def expected_folds(folds: list, names: dict[int, str]) -> list[str]:
    """The spec's folds as the run directory spells them: 'all' as every class, names as their labels."""
    by_name = {n.casefold(): c for c, n in names.items()}
    out = []
    for f in folds:
        text = str(f)
        if text == "all":
            out += [str(c) for c in names]
        elif text.isascii() and text.isdigit():
            out.append(str(int(text)))
        else:
            out.append(str(by_name.get(text.casefold(), text)))
    return out


def collect(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/ (see the module docstring) and return its path."""
    run_dir = Path(run_dir)
    spec, results = load_run(run_dir)
    names = {c: n for r in results for c, n in r.names.items()}
    classes = sorted(names)
    expected = {(f, s) for f in expected_folds(spec.folds, names) for s in spec.seeds}
    found = {(r.fold, r.seed) for r in results}
    missing = sorted(expected - found, key=lambda fs: (fold_order(fs[0]), fs[1]))
    excluded = sorted({int(f) for f, _ in expected | found if f != "none"})

    long = long_table(results, spec.name)
    cfg = spec.report
    tests = {(r.fold, r.seed): predictions.read(run_dir, r.paths.predictions["test"], f"result fold {r.fold} seed "
                                                f"{r.seed}") for r in results}
    full = {s: test for (f, s), test in tests.items() if f == "none"}
    trusts = {(r.fold, r.seed): fold_trust(r, tests[(r.fold, r.seed)], full.get(r.seed), cfg) for r in results}
    fold_cells = fold_table(results, trusts)
    folds = expand(fold_cells, FOLD_INTERVALS)
    method_cells = methods_table(results, tests, cfg)
    methods, cost = expand(method_cells, METHOD_INTERVALS), cost_table(results, long, classes)
    several = bool(folds.groupby("fold").seed.nunique().max() > 1)
    uncertain = Uncertain(fold_cells, method_cells, seeds_table(folds, cfg.level), cfg,
                          ", ".join(sorted({r.corrector.kind for r in results})))
    tables = {}
    if excluded:
        tables = matrices(long, classes, excluded)
        tables["tpr_h_power"] = power_table(tables["matrix_tpr_h"], long, classes)

    out = run_dir / "report"
    with atomic_dir(out) as tmp:
        long.to_parquet(tmp / "metrics.parquet", index=False)
        long.to_csv(tmp / "metrics.csv", index=False)
        folds.to_csv(tmp / "folds.csv", index=False)
        methods.to_csv(tmp / "methods.csv", index=False)
        cost.to_csv(tmp / "cost.csv", index=False)
        if several:
            seeds_numbers(uncertain.seeds).to_csv(tmp / "folds_over_seeds.csv", index=False)
        if methods.method.nunique() > 1:
            gain_harm_plot(tmp / "methods_gain_harm.png", methods, names)
            roc_curves(tmp / "roc_curves.png", results, tests, names)
        for name, (mean, std) in tables.items():
            mean.to_csv(tmp / f"{name}.csv")
            if several:
                std.to_csv(tmp / f"{name}_std.csv")
        for m, title in MATRICES.items() if excluded else ():
            heatmap(tmp / f"heatmap_{m}.png", tables[f"matrix_{m}"][0], title, names, diverging=m == "dfpr")
        if folds.epochs_run.notna().any():
            training_curves(tmp / "training_curves.png", results, names)
        nets = sorted({r.net for r in results})
        (tmp / "report.md").write_text(report_markdown(spec, run_dir, folds, tables, missing, several, methods, cost,
                                                       names, nets, uncertain))
    return out
