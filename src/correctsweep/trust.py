"""How far to trust collect's figures, from the predictions files alone (see `predictions`): per fold x seed,
bootstrap intervals of the published h's figures and of every method's, the exact McNemar test of f against
h, the paired tests between methods, and each method's threshold-free detection of the excluded class.

Every bootstrap of a fold x seed draws with one seed, so every method of it is resampled with the same
images (`stats.draws` depends on the labels and the seed only): their intervals differ by the methods alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from correctsweep import metrics, stats
from correctsweep.certify import Certificate
from correctsweep.config import ReportConfig
from correctsweep.results import TrialResult
from correctsweep.stats import Interval

INTERVALS = list(stats.FIGURES)  # the figures every fold's and method's h gets an interval for
FOLD_INTERVALS = [*INTERVALS, "power"]
METHOD_INTERVALS = ["gain_excluded", "macro_harm", "pooled_harm", "macro_dfpr", "balanced_accuracy_h"]
CERTIFIED = ["harm_bound", "test_harm", "harm_held"]
"""A certified h's bound (corrector.max_harm), its Harm on test by the bound's measure, and whether it stayed under."""
DETECTION = ["auroc", "aupr", "fpr_at_95_tpr"]
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class FoldTrust:
    """The intervals of one fold x seed's published h (FOLD_INTERVALS) and McNemar's p of f against it."""

    intervals: dict[str, Interval]
    mcnemar_p: float
    """The exact two-sided McNemar p of f's and h's correctness on the test images."""
    certified: dict
    """CERTIFIED: h's certified bound on Harm beside its Harm on test."""


def _resampling(cfg: ReportConfig) -> stats.Resampling:
    return stats.Resampling(cfg.bootstrap, cfg.level, BOOTSTRAP_SEED)


def intervals(test: pd.DataFrame, method: str, result: TrialResult, cfg: ReportConfig) -> dict[str, Interval]:
    """INTERVALS of `method`'s h on the fold's test images, f and h resampled together."""
    got = stats.bootstrap_intervals(test.label, test.pred_f, test[f"h_{method}"], result.classes, result.excluded,
                                    _resampling(cfg))
    return {name: got[name] for name in INTERVALS}


def power(test: pd.DataFrame, full: pd.DataFrame | None, result: TrialResult, cfg: ReportConfig) -> Interval:
    """P of the excluded class: TPR_h in this fold ÷ TPR under the same seed's full model (fold none's f),
    image for image on the same test images."""
    if result.excluded is None:
        return Interval.na("no excluded class (the full model)")
    if full is None:
        return Interval.na(f"no full model (fold none) of seed {result.seed}")
    both = test.merge(full[["sample_id", "pred_f"]], on="sample_id", suffixes=("", "_full"))
    if len(both) != len(test):
        return Interval.na("the full model's test images differ")
    return stats.bootstrap_power(both.label, both[f"h_{result.corrector.kind}"], both.pred_f_full, result.classes,
                                 result.excluded, _resampling(cfg))


def certified(certificate: Certificate | None, test: pd.DataFrame, method: str, result: TrialResult) -> dict:
    """CERTIFIED for one method's h on test: NaN and NA where it carries no certificate."""
    if certificate is None:
        return {"harm_bound": math.nan, "test_harm": math.nan, "harm_held": pd.NA}
    harm = metrics.harm(test.label, test.pred_f, test[f"h_{method}"], result.classes, certificate.harm_measure)
    return {"harm_bound": certificate.max_harm, "test_harm": harm,
            "harm_held": bool(math.isnan(harm) or harm <= certificate.max_harm)}  # NaN: f right nowhere, none broken


def fold_trust(result: TrialResult, test: pd.DataFrame, full: pd.DataFrame | None, cfg: ReportConfig) -> FoldTrust:
    h = test[f"h_{result.corrector.kind}"]
    return FoldTrust(intervals(test, result.corrector.kind, result, cfg) | {"power": power(test, full, result, cfg)},
                     stats.mcnemar_exact(test.pred_f == test.label, h == test.label),
                     certified(result.corrector.certificate, test, result.corrector.kind, result))


def method_rows(result: TrialResult, test: pd.DataFrame, cfg: ReportConfig) -> list[dict]:
    """One row per method of the fold x seed: METHOD_INTERVALS (Interval cells), accuracy of h, the detection
    metrics of its novelty score (NaN, and `detection_na` the reason, where undefined) and the paired tests
    against the published kind, Holm-corrected within the fold, with whether it ties the best method."""
    preds = {m: test[f"h_{m}"].to_numpy() for m in result.methods}
    paired = stats.paired_tests(test.label, preds, result.corrector.kind, result.excluded, 1 - cfg.level)
    rows = []
    for name, record in result.methods.items():
        found = intervals(test, name, result, cfg)
        detection = stats.detection_metrics(test.label == result.excluded, test[f"score_{name}"])
        # recovery is None where test holds no image of the excluded class; p is None for the published kind
        recovery, correct = paired["recovery"].get(name), paired["correct"][name]
        number = lambda x: math.nan if x is None else x
        rows.append({"fold": result.fold, "seed": result.seed, "method": name, "family": record.family,
                     **{k: found[k] for k in METHOD_INTERVALS}, **certified(record.certificate, test, name, result),
                     "accuracy_h": correct.rate,
                     **{k: number(getattr(detection, k)) for k in DETECTION}, "detection_na": detection.reason,
                     "p_recovery": number(recovery and recovery.p),
                     "p_recovery_holm": number(recovery and recovery.p_holm),
                     "ties_best_recovery": recovery.ties_best if recovery else pd.NA,
                     "p_correct": number(correct.p), "p_correct_holm": number(correct.p_holm),
                     "ties_best_correct": correct.ties_best, "seconds": record.seconds})
    return rows


def expand(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each Interval column as three float columns: the figure (NaN where undefined), <figure>_lo, <figure>_hi."""
    out = table.copy()
    for name in columns:
        at = out.columns.get_loc(name)
        cells = out.pop(name)
        for offset, (suffix, part) in enumerate((("", "value"), ("_lo", "lo"), ("_hi", "hi"))):
            values = [getattr(c, part) for c in cells]
            out.insert(at + offset, name + suffix, np.array([math.nan if v is None else v for v in values], float))
    return out


def seed_text(summary: stats.SeedSummary) -> str:
    """A figure over seeds: 'mean ± std [lo, hi]' (the t-interval with 3 seeds or more), 'mean ± std' with 2,
    the value with 1, 'n/a (reason)' where no seed defines it."""
    if summary.n == 0:
        return str(summary.interval)
    text = f"{summary.mean:.3f}" + (f" ± {summary.std:.3f}" if summary.std is not None else "")
    i = summary.interval
    return text + (f" [{i.lo:.2f}, {i.hi:.2f}]" if i.reason is None else "")
