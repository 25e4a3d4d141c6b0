"""How far to trust a figure: bootstrap intervals over the test images, intervals over seeds, paired
tests between methods on the same images, and threshold-free detection metrics.

The bootstrap is stratified by true class: each resample draws, within every class, as many test images
as the class has, with replacement, so a class's N_i (and the excluded class's presence) is fixed and
the interval reflects which images of a class were drawn, not how many. f's and h's predictions are
resampled together (the same indices), as are a fold's and the full model's for P. Every figure of a
resample comes from `metrics.counts` with the resamples as weights: the metrics' own definitions, all
resamples in one matrix product. Intervals are percentile intervals.

A figure that is undefined on the test set itself (no excluded class, no image of it, a zero
denominator) is an `Interval` marked n/a with the reason; one that is undefined in some resamples only
takes its bounds from the resamples where it is defined, and is n/a when that is under half of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from statsmodels.stats.contingency_tables import mcnemar

from correctsweep import metrics


@dataclass(frozen=True)
class Interval:
    """A figure and its interval; value, lo and hi are None, and reason says why, where it is undefined."""

    value: float | None
    lo: float | None
    hi: float | None
    reason: str | None = None

    @classmethod
    def na(cls, reason: str) -> Interval:
        return cls(None, None, None, reason)

    def __str__(self) -> str:
        return format_interval(self)


def format_interval(interval: Interval, digits: int = 3) -> str:
    """'0.457 [0.41, 0.50]' (bounds one digit shorter than the value), or 'n/a (reason)'."""
    if interval.reason is not None:
        return f"n/a ({interval.reason})"
    return f"{interval.value:.{digits}f} [{interval.lo:.{digits - 1}f}, {interval.hi:.{digits - 1}f}]"


FIGURES = ("gain_excluded", "macro_harm", "pooled_harm", "macro_dfpr", "tpr_h_excluded", "balanced_accuracy_f",
           "balanced_accuracy_h")


def draws(labels: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """int [resamples, N]: indices of a stratified bootstrap, each row drawing every true class's images
    with replacement as many times as the class has images."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, labels.size), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[:, start:start + members.size] = members[rng.integers(0, members.size, (resamples, members.size))]
        start += members.size
    return out


def _weights(index: np.ndarray, n: int) -> np.ndarray:
    """[R, n]: how often each image is drawn in each resample."""
    rows = np.arange(len(index))[:, None] * n
    return np.bincount((rows + index).ravel(), minlength=len(index) * n).reshape(len(index), n).astype(float)


def _interval(value: float, samples: np.ndarray, level: float) -> Interval:
    """The percentile interval of `samples` (NaN: a resample where the figure is undefined) around `value`."""
    defined = samples[~np.isnan(samples)]
    if defined.size * 2 < samples.size:
        return Interval.na(f"undefined in {samples.size - defined.size} of {samples.size} resamples")
    lo, hi = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return Interval(value, float(lo), float(hi))


def _figures(c: metrics.Counts, at: int | None) -> dict[str, np.ndarray]:
    """FIGURES from counts [..., K]; `at` the excluded class's column (None: the full model)."""
    r = metrics.rates(c)
    nan = np.full(c.total.shape, np.nan)
    return {"gain_excluded": nan if at is None else r["gain"][..., at],
            "macro_harm": metrics.macro(r["harm"]),
            "pooled_harm": metrics.harm_of(c.hit_f - c.hit_both, c.hit_f, "pooled"),
            "macro_dfpr": metrics.macro(r["dfpr"]),
            "tpr_h_excluded": nan if at is None else r["tpr_h"][..., at],
            "balanced_accuracy_f": metrics.macro(r["tpr_f"]), "balanced_accuracy_h": metrics.macro(r["tpr_h"])}


def _why_undefined(name: str, c: metrics.Counts, at: int | None, excluded) -> str:
    if at is None and name.endswith("_excluded"):
        return "no excluded class (the full model)"
    if at is not None and c.n[at] == 0:
        return f"no image of class {excluded} in test"
    return "a zero denominator"


@dataclass(frozen=True)
class Resampling:
    """How a bootstrap resamples: how many times, at which confidence level, from which seed."""

    resamples: int = 1000
    level: float = 0.95
    seed: int = 0


def bootstrap_intervals(labels, pred_f, pred_h, classes, excluded: int | None,
                        how: Resampling = Resampling()) -> dict[str, Interval]:
    """FIGURES of one fold's test images with stratified bootstrap intervals: the excluded class's Gain and
    TPR_h, the mean and pooled Harm, the macro ΔFPR, and balanced accuracy of f and of h."""
    classes = list(classes)
    at = classes.index(excluded) if excluded is not None else None
    point = metrics.counts(labels, pred_f, pred_h, classes)
    labels, pred_f, pred_h = np.asarray(labels), np.asarray(pred_f), np.asarray(pred_h)
    weights = _weights(draws(labels, how.resamples, how.seed), labels.size)
    sampled = _figures(metrics.counts(labels, pred_f, pred_h, classes, weights), at)
    out = {}
    for name, value in _figures(point, at).items():
        value = float(value)
        out[name] = (Interval.na(_why_undefined(name, point, at, excluded)) if math.isnan(value)
                     else _interval(value, sampled[name], how.level))
    return out


def bootstrap_power(labels, pred_h, pred_full, classes, excluded: int, how: Resampling = Resampling()) -> Interval:
    """P of the excluded class j: TPR_h of j in its fold ÷ TPR of j under the full model, both on the same
    test images (`pred_h` the fold's h, `pred_full` the full model's predictions, image for image), each
    resample drawing the same indices for both."""
    labels, pred_h, pred_full = np.asarray(labels), np.asarray(pred_h), np.asarray(pred_full)
    classes = list(classes)
    at = classes.index(excluded)
    # the fold's h and the full model as the two classifiers of one table: tpr_f is the full model's TPR
    ratio = lambda c: metrics.rates(c)["ratio"][..., at]  # tpr_h / tpr_f
    point = metrics.counts(labels, pred_full, pred_h, classes)
    if point.n[at] == 0:
        return Interval.na(f"no image of class {excluded} in test")
    if point.hit_f[at] == 0:
        return Interval.na(f"the full model recognises no image of class {excluded} in test")
    weights = _weights(draws(labels, how.resamples, how.seed), labels.size)
    return _interval(float(ratio(point)), ratio(metrics.counts(labels, pred_full, pred_h, classes, weights)), how.level)


@dataclass(frozen=True)
class SeedSummary:
    """A figure over seeds: the seeds where it is defined, their mean and std, and a t-interval."""

    n: int
    mean: float | None
    std: float | None
    """Sample standard deviation (ddof 1); None with fewer than 2 seeds."""
    interval: Interval
    """Student's t-interval of the mean; n/a with fewer than 3 seeds."""


def seed_summary(values, level: float = 0.95) -> SeedSummary:
    """Mean, std and t-interval of one figure over seeds, leaving out seeds where it is NaN (undefined)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = values.size
    if n == 0:
        return SeedSummary(0, None, None, Interval.na("undefined in every seed"))
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n >= 2 else None
    if n < 3:
        return SeedSummary(n, mean, std, Interval.na(f"{n} seed{'s' if n > 1 else ''}; an interval needs 3"))
    if std == 0:  # scipy's t.interval is NaN at scale 0; every seed agrees
        return SeedSummary(n, mean, std, Interval(mean, mean, mean))
    lo, hi = sps.t.interval(level, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    return SeedSummary(n, mean, std, Interval(mean, float(lo), float(hi)))


def mcnemar_exact(correct_a, correct_b) -> float:
    """The two-sided exact McNemar p-value of two methods' per-image successes on the same images."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    return float(mcnemar(table, exact=True).pvalue)


@dataclass(frozen=True)
class Comparison:
    """One method against the published one and against the best, on the same images."""

    rate: float
    """Its share of successes."""
    p: float | None
    """Exact McNemar p against the published method; None for the published method itself."""
    p_holm: float | None
    """p, Holm-corrected over the comparisons with the published method."""
    ties_best: bool
    """Not significantly different from the best method: the Holm-corrected McNemar test of the best
    against each other method does not reject at alpha (the best itself ties)."""


def _holm(p: dict[str, float], alpha: float) -> tuple[dict[str, float], dict[str, bool]]:
    """Holm's step-down correction: each p's corrected value and whether it is rejected at alpha. Written out
    (as statsmodels' multipletests computes it) because that function calls gc.collect() on every Holm call,
    which costs a second with torch loaded: most of collect's time on a run of many folds and seeds."""
    if not p:
        return {}, {}
    values = np.asarray(list(p.values()), dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    steps = np.arange(len(ranked), 0, -1)
    fails = np.flatnonzero(ranked > alpha / steps)
    reject = np.arange(len(ranked)) < (fails[0] if fails.size else len(ranked))  # down to the first that fails
    corrected = np.minimum(np.maximum.accumulate(ranked * steps), 1.0)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return (dict(zip(p, map(float, corrected[back]))), dict(zip(p, map(bool, reject[back]))))


def compare_methods(outcomes: dict[str, np.ndarray], published: str, alpha: float = 0.05) -> dict[str, Comparison]:
    """Per method, from its per-image successes (bool [n], the same images for every method): the exact
    McNemar test against `published`, Holm-corrected over those comparisons, and whether it ties the best
    (the highest rate; ties to the first named), Holm-corrected over the best's comparisons."""
    rates = {m: float(np.mean(o)) for m, o in outcomes.items()}
    best = max(rates, key=rates.get)
    raw = {m: mcnemar_exact(outcomes[published], o) for m, o in outcomes.items() if m != published}
    holm, _ = _holm(raw, alpha)
    _, beaten = _holm({m: mcnemar_exact(outcomes[best], o) for m, o in outcomes.items() if m != best}, alpha)
    return {m: Comparison(rates[m], raw.get(m), holm.get(m), not beaten.get(m, False)) for m in outcomes}


def paired_tests(labels, preds: dict[str, np.ndarray], published: str, excluded: int,
                 alpha: float = 0.05) -> dict[str, dict[str, Comparison]]:
    """compare_methods within one fold for the methods' h on the same test images, on two outcomes:
    'correct' (each image right or not) and 'recovery' (each image of the excluded class labelled as
    it or not); 'recovery' is empty where test holds no image of the excluded class."""
    labels = np.asarray(labels)
    own = labels == excluded
    out = {"correct": compare_methods({m: np.asarray(p) == labels for m, p in preds.items()}, published, alpha)}
    out["recovery"] = (compare_methods({m: np.asarray(p)[own] == excluded for m, p in preds.items()}, published,
                                       alpha) if own.any() else {})
    return out


@dataclass(frozen=True)
class DetectionMetrics:
    """How well a novelty score ranks the excluded class above the others, at no threshold."""

    auroc: float | None
    aupr: float | None
    """Average precision, the excluded class positive."""
    fpr_at_95_tpr: float | None
    """The share of other images scored at or above the lowest threshold that flags 95 % of the excluded class."""
    reason: str | None = None
    """Why the three are None."""


def detection_metrics(is_excluded, score) -> DetectionMetrics:
    """AUROC, AUPR and FPR at 95 % TPR of `score` (higher: more likely the excluded class)."""
    positive, score = np.asarray(is_excluded, dtype=bool), np.asarray(score, dtype=float)
    reason = ("no image of the excluded class in test" if not positive.any()
              else "no image of another class in test" if positive.all()
              else "the score is constant on test" if np.ptp(score) == 0 else None)
    if reason:
        return DetectionMetrics(None, None, None, reason)
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return DetectionMetrics(float(roc_auc_score(positive, score)), float(average_precision_score(positive, score)),
                            float(fpr[np.searchsorted(tpr, 0.95)]))
