"""Certified Harm: a threshold tau for which h breaks at most `max_harm` of f's correct answers on new data,
with probability at least `confidence` over the calibration rows (Learn-then-Test: Angelopoulos, Bates,
Candes, Jordan and Lei, 2021).

Why the guarantee holds
* The calibration rows are a stratified part of `correct` that nothing certified was fitted on: the corrector
  g is searched and refitted on the rest of `correct` (the fit part), a detector fitted there, and f never
  saw `correct`. So, given the fit part, the calibration rows and new rows are exchangeable draws, and for a
  fixed tau the rows where f is right are i.i.d. Bernoulli trials of "h breaks it" with probability Harm(tau).
* Each tau of a grid fixed before the calibration rows are read is a hypothesis H(tau): Harm(tau) > max_harm.
  A Clopper-Pearson upper bound U at level delta = 1 - confidence rejects it when U <= max_harm (the binomial
  tail p-value P(Bin(n, max_harm) <= broken) <= delta, the same test).
* The grid is tested in a fixed sequence, from the largest tau (h changes least) down, stopping at the first
  tau that fails: fixed-sequence testing keeps the chance that any rejected H(tau) is true at most delta, with
  no correction for the number of taus (Harm falls as tau rises, so the order is the natural one). Every tau
  before the stop is certified at once; choosing among them by the objective on the same rows spends nothing.
* The kind, its hyperparameters and its policy are chosen on the fit part (cross-validated), never on the
  calibration rows, so the choice costs no hypothesis either.

Which Harm (`harm_measure`)
  pooled  the share of all of f's correct answers that h breaks (classes pooled): one binomial test.
  mean    the mean over classes of Harm_i (the paper's figure): each class's bound at delta / m (Bonferroni over
          the m classes f is right on), and their mean compared with max_harm.
  worst   the largest Harm_i: every class's bound at delta (an intersection-union test needs no correction).
A class with few calibration rows can make mean or worst impossible at any tau: `check_size` says so, with
the size it would need, before anything is certified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from correctsweep import metrics, policy
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet

NO_CORRECTION = math.inf  # the tau of h = f: no score reaches it
TOP_TAUS = 1.0 - 2.0 ** -np.arange(6, 24)  # probabilities near 1, where a confident g's first switches lie


@dataclass(frozen=True)
class Certificate:
    """What was certified for one corrector or detector: its tau and the guarantee it carries."""

    tau: float
    """The chosen threshold; inf when no tau that changes anything certified (h = f)."""
    max_harm: float
    confidence: float
    harm_measure: str
    calibration_rows: int
    """Rows of `correct` held out to certify (`certified_by` of them f was right on)."""
    certified_by: int
    """Calibration rows f was right on: the trials the binomial tests count."""
    calibration_harm: float
    """The measure's value at tau on the calibration rows (an in-sample figure)."""

    @property
    def corrects(self) -> bool:
        """Whether h differs from f at all (some tau below inf certified)."""
        return math.isfinite(self.tau)


def split(correct: FeatureSet, cfg) -> tuple[FeatureSet, FeatureSet | None]:
    """(fit part, calibration part) of `correct` under a CorrectorConfig: the calibration part is None, and the
    fit part all of `correct`, when nothing is certified (max_harm null)."""
    if cfg.max_harm is None:
        return correct, None
    fit, calibration = calibration_rows(correct.labels, cfg.calibration_fraction, cfg.seed)
    return correct.rows(fit), correct.rows(calibration)


def corrector_taus(cfg) -> np.ndarray:
    """The taus certified for a corrector, fixed before any calibration row is read: the search's grid and a
    finer one near 1, where a confident g's first switches lie."""
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, cfg.tau_grid, endpoint=False), TOP_TAUS, [1.0]]))


def calibration_rows(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows) of `correct`: `fraction` of each class, drawn with `seed`, held out."""
    rng = np.random.default_rng([seed, 30])  # apart from the CV split's stream, which uses `seed` alone
    held = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        held.append(rows[:int(round(fraction * len(rows)))])
    calibration = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), calibration), calibration


def upper_bound(broken, trials, delta: float) -> np.ndarray:
    """Clopper-Pearson upper confidence bounds of binomial rates at level delta (NaN where no trial)."""
    broken, trials = np.asarray(broken, dtype=float), np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1 - delta, broken + 1, np.maximum(trials - broken, 1e-300))
    return np.where(trials == 0, np.nan, np.where(broken >= trials, 1.0, bound))


@dataclass(frozen=True)
class Rule:
    """The certified-Harm settings: corrector.max_harm, confidence and harm_measure."""

    max_harm: float
    confidence: float
    harm_measure: str

    @classmethod
    def of(cls, cfg) -> Rule | None:
        """A CorrectorConfig's rule, or None when it certifies nothing."""
        return None if cfg.max_harm is None else cls(cfg.max_harm, cfg.confidence, cfg.harm_measure)

    @property
    def delta(self) -> float:
        return 1.0 - self.confidence

    def statistic(self, broken: np.ndarray, kept: np.ndarray):
        """The bound compared with max_harm, from per-class counts [..., K]: `kept` of f's right answers, `broken`
        of them by h (a leading axis, e.g. one row per tau, gives one bound each). Classes f is never right on have
        no Harm (the excluded class among them); NaN where f is right nowhere."""
        on = np.asarray(kept) > 0
        if not on.any():
            return np.full(np.shape(broken)[:-1], np.nan)
        broken, kept = np.asarray(broken)[..., on], np.asarray(kept)[on]
        if self.harm_measure == "pooled":
            return upper_bound(broken.sum(-1), kept.sum(), self.delta)
        if self.harm_measure == "mean":
            return upper_bound(broken, kept, self.delta / on.sum()).mean(-1)
        return upper_bound(broken, kept, self.delta).max(-1)

    def needed(self, kept: np.ndarray, classes: list) -> str | None:
        """Why no tau can certify with these calibration counts, even one that breaks nothing, or None."""
        if not self.statistic(np.zeros_like(kept), kept) > self.max_harm:
            return None
        alone = math.ceil(math.log(self.delta) / math.log(1 - self.max_harm))  # zero broken of n: (1-a)^n <= delta
        if self.harm_measure == "pooled" or not (kept > 0).any():
            return f"{int(kept.sum())} calibration rows where f is right, and it needs at least {alone}"
        m = int((kept > 0).sum())
        level = self.delta / m if self.harm_measure == "mean" else self.delta
        each = math.ceil(math.log(level) / math.log(1 - self.max_harm))
        small = min((i for i in range(len(kept)) if kept[i] > 0), key=lambda i: kept[i])
        return (f"class {classes[small]} has {int(kept[small])} calibration rows where f is right, and the "
                f"{self.harm_measure} Harm needs about {each} in every class")


def harm_counts(target, conf, labels: policy.Labels, taus) -> tuple[np.ndarray, np.ndarray]:
    """Per class (labels.classes order): how many of f's right answers h = where(conf >= tau, target, f) breaks,
    [T, K] for the T `taus` (or [K] for one tau), and f's right answers [K]."""
    y, f, conf = np.asarray(labels.y_true), np.asarray(labels.pred_f), np.asarray(conf)
    k = len(labels.classes)
    at = metrics.positions(labels.classes, y)  # k for a class outside `classes`: such rows count for none
    right = (at < k) & (y == f)
    kept = np.bincount(at[right], minlength=k)
    breaks = right & (np.asarray(target) != y)  # a switch of these breaks f's answer
    taus = np.asarray(taus, dtype=float)
    broken = np.zeros(taus.shape + (k,), dtype=np.int64)
    for i in range(k):
        scores = np.sort(conf[breaks & (at == i)])
        broken[..., i] = len(scores) - np.searchsorted(scores, taus, side="left")  # rows with conf >= tau
    return broken, kept


def check_size(labels: policy.Labels, rule: Rule) -> None:
    """A CorrectsweepError when even a tau that breaks nothing cannot certify on these calibration rows."""
    kept = harm_counts(labels.pred_f, np.zeros(len(labels.y_true)), labels, NO_CORRECTION)[1]
    reason = rule.needed(kept, labels.classes)
    if reason is not None:
        raise CorrectsweepError(f"corrector.max_harm={rule.max_harm} at corrector.confidence={rule.confidence} "
                                f"({rule.harm_measure} Harm) cannot be certified: {reason}; raise "
                                "corrector.calibration_fraction or data.correct_fraction, or relax max_harm or "
                                "confidence")


def certified_taus(target, conf, labels: policy.Labels, rule: Rule, taus) -> list[float]:
    """The taus whose Harm the calibration rows certify, largest first: the fixed sequence stops at the first
    that fails."""
    taus = np.unique(np.asarray(taus, dtype=float))[::-1]
    holds = rule.statistic(*harm_counts(target, conf, labels, taus)) <= rule.max_harm  # NaN: f right nowhere
    return taus[:len(taus) if holds.all() else int(np.argmin(holds))].tolist()


def certify(target, conf, labels: policy.Labels, rule: Rule, taus, cfg) -> Certificate:
    """The certified tau among `taus` (fixed before the calibration rows were read) for h = where(conf >= tau,
    target, f) on the calibration rows `labels`, and the guarantee; `cfg` (a CorrectorConfig) names the objective
    that picks among the certified taus (ties to the largest). A CorrectsweepError when even a tau that breaks
    nothing cannot certify with these rows."""
    check_size(labels, rule)
    certified = certified_taus(target, conf, labels, rule, taus)
    tau = NO_CORRECTION
    if certified:
        tau, _ = policy.scan(target, conf, labels, cfg, np.array(certified[::-1]))
    harm = metrics.harm_of(*harm_counts(target, conf, labels, tau), rule.harm_measure)
    kept = harm_counts(target, conf, labels, NO_CORRECTION)[1]
    return Certificate(tau, rule.max_harm, rule.confidence, rule.harm_measure, len(labels.y_true),
                       int(kept.sum()), harm)


@dataclass(frozen=True)
class FrontierPoint:
    """h at one tau on `test`: what it recovers against what it breaks."""

    tau: float
    gain: float
    """The excluded class's Gain (the mean Gain over classes in the full model)."""
    pooled_harm: float
    mean_harm: float
    worst_harm: float


def frontier(target, conf, labels: policy.Labels, taus) -> list[FrontierPoint]:
    """The Gain-Harm curve of h = where(conf >= tau, target, f) over `taus` on the rows of `labels` (the test
    split: a figure to read, never to choose by)."""
    out = []
    for tau in sorted(set(np.asarray(taus, dtype=float).tolist())):
        h = np.where(conf >= tau, target, labels.pred_f)
        c = metrics.counts(labels.y_true, labels.pred_f, h, labels.classes)
        gain = metrics.rates(c)["gain"]
        at = None if labels.excluded is None else list(labels.classes).index(labels.excluded)
        broken, kept = c.hit_f - c.hit_both, c.hit_f
        out.append(FrontierPoint(tau, float(metrics.nanmean(gain) if at is None else gain[at]),
                                 *(metrics.harm_of(broken, kept, m) for m in metrics.HARM_MEASURES)))
    return out
