"""The report's tables, from the run's results and the per-fold trust of their test predictions: the long
metrics table, one row per fold x seed (folds, cost), per fold over seeds, the class x fold matrices with the
corrector power, and one row per fold x seed x method.

P_i is a ratio of seed means, TPR_h,i in fold i / TPR_f,i in fold none: per-seed ratios would pair
unrelated nets and blow up wherever one seed's full model has a TPR near 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from correctsweep import stats
from correctsweep.config import ReportConfig
from correctsweep.metrics import nanmean
from correctsweep.report.labels import result_order
from correctsweep.results import TrialResult
from correctsweep.trust import CERTIFIED, DETECTION, FOLD_INTERVALS, METHOD_INTERVALS, FoldTrust, method_rows

MATRICES = {"retention": "Retention", "harm": "Harm", "gain": "Gain", "dfpr": "ΔFPR", "tpr_h": "TPR_h"}
"""metric -> its title: the class x fold matrices."""
METHOD_COLUMNS = ["fold", "seed", "method", "family", *METHOD_INTERVALS, *CERTIFIED, "accuracy_h", *DETECTION,
                  "detection_na",
                  "p_recovery", "p_recovery_holm", "ties_best_recovery", "p_correct", "p_correct_holm",
                  "ties_best_correct", "seconds"]
COST_NUMBERS = ["train_seconds", "search_seconds", "refit_seconds", "correct_over_train", "tpr_h_excluded",
                "full_tpr_excluded"]


@dataclass(frozen=True)
class OverSeeds:
    """A class x fold table over seeds: rows = class, columns = excluded class (then any extra columns)."""

    mean: pd.DataFrame
    std: pd.DataFrame
    """Sample std over seeds: NaN where a cell has one seed."""


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
                     **found.certified, "accuracy_f": r.summary["accuracy_f"],
                     "accuracy_h": r.summary["accuracy_h"], "mcnemar_p": found.mcnemar_p,
                     "balanced_accuracy_f_trained": _trained_balanced_accuracy(r, r.excluded),
                     "full_f_same_classes": (_trained_balanced_accuracy(full[r.seed], r.excluded)
                                             if r.seed in full else np.nan),
                     "epochs_run": t.get("epochs_run"),
                     "best_epoch": t.get("best_epoch"), "checkpoint": Path(t.get("checkpoint", "")).name,
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


def matrices(long: pd.DataFrame, classes: list[int], folds: list[int]) -> dict[str, OverSeeds]:
    """Each of MATRICES's metrics over seeds; rows = class, columns = excluded class."""
    cells = long[(long.fold != "none") & long["class"].notna()]
    summary = cells.astype({"fold": int}).groupby(["metric", "class", "fold"]).value.agg(["mean", "std"])
    grid = pd.MultiIndex.from_product([list(MATRICES), classes, folds], names=summary.index.names)
    summary = summary.reindex(grid).sort_index()  # a fold without results is a column of NaN, not a missing one
    return {m: OverSeeds(summary.loc[m, "mean"].unstack(), summary.loc[m, "std"].unstack()) for m in MATRICES}


def full_model_tpr(long: pd.DataFrame, classes: list[int]) -> pd.DataFrame:
    """Each class's TPR under the full model (fold none): columns mean and std over seeds."""
    full = long[(long.fold == "none") & (long.metric == "tpr_f") & long["class"].notna()]
    return full.groupby("class").value.agg(["mean", "std"]).reindex(classes)


def power_table(tpr_h: OverSeeds, long: pd.DataFrame, classes: list[int]) -> OverSeeds:
    """The TPR_h matrix with the full model's TPR and the corrector power P appended."""
    full = full_model_tpr(long, classes)
    own_fold = pd.Series(np.diag(tpr_h.mean.reindex(columns=classes).to_numpy()), index=full.index)
    power = (own_fold / full["mean"]).where(full["mean"] > 0)
    return OverSeeds(tpr_h.mean.assign(full=full["mean"].to_numpy(), P=power.to_numpy()),
                     tpr_h.std.assign(full=full["std"].to_numpy(), P=np.nan))


def methods_table(results: list[TrialResult], tests: dict[tuple[str, int], pd.DataFrame],
                  cfg: ReportConfig) -> pd.DataFrame:
    """One row per fold x seed x method (every corrector kind and detector of a result's `methods`), in
    the folds with an excluded class: the only ones where detectors run and a Gain of it exists. Columns:
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


def frontier_table(results: list[TrialResult]) -> pd.DataFrame:
    """One row per fold x seed x tau of the published corrector's Gain-Harm curve on test; `chosen` marks its tau."""
    rows = [{"fold": r.fold, "seed": r.seed, **vars(point), "chosen": point.tau == r.corrector.tau}
            for r in sorted(results, key=result_order) for point in r.frontier]
    return pd.DataFrame(rows, columns=["fold", "seed", "tau", "gain", "pooled_harm", "mean_harm", "worst_harm",
                                       "chosen"])
