"""The corrected system h (SPEC §1): decision policies, the threshold tau and the search objective.

With g's class probabilities p(c | e(x)), f's prediction f(x) and the excluded class j:
  override:  c* = argmax_c p(c | e(x));  h(x) = c* if c* != f(x) and p(c* | e(x)) >= tau, else f(x)
  new_class: h(x) = j if p(j | e(x)) >= tau, else f(x)
Where the target already equals f(x), switching is a no-op, so both rules are
h = where(conf >= tau, target, f) for a per-row (target, conf): one comparison per threshold.
new_class needs an excluded class, so the full model (fold none) never uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from correctsweep import metrics


def policies_for(policies: list[str], excluded: int | None) -> list[str]:
    """The policies a fold may use: all asked for, less new_class in the full model, where there is
    no excluded class to flag; override stands in when that leaves none."""
    if excluded is not None:
        return list(policies)
    return [p for p in policies if p != "new_class"] or ["override"]


def targets(proba, classes, policy, excluded) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the label h switches to, and the probability compared with tau."""
    if policy == "override":
        best = proba.argmax(1)
        return np.asarray(classes)[best], proba[np.arange(len(proba)), best]
    if policy == "new_class" and excluded is not None:
        return np.full(len(proba), excluded), proba[:, list(classes).index(excluded)]
    raise ValueError(f"policy {policy!r} is not available (excluded={excluded})")


def apply_policy(proba, pred_f, classes, policy, tau, excluded) -> np.ndarray:
    """h's labels from g's probabilities (columns in `classes` order) and f's labels."""
    target, conf = targets(proba, classes, policy, excluded)
    return np.where(conf >= tau, target, pred_f)


def objective_score(labels: Labels, pred_h, cfg) -> float:
    """What the search maximises for h on `labels`' rows (cfg: a CorrectorConfig's objective, max_harm and
    harm_measure, see CorrectorConfig.objective); higher is better."""
    y_true, pred_f, classes, excluded = labels.y_true, labels.pred_f, labels.classes, labels.excluded
    if cfg.objective == "balanced_accuracy":
        return metrics.balanced_accuracy(y_true, pred_h, classes)
    if cfg.objective == "macro_f1":
        return metrics.macro_f1(y_true, pred_h, classes)
    if cfg.objective == "gain_at_harm":
        table = metrics.per_class(y_true, pred_f, pred_h, classes)
        gain = table["gain"].mean() if excluded is None else table.at[excluded, "gain"]
        harm = metrics.harm(y_true, pred_f, pred_h, classes, cfg.harm_measure)  # NaN: f right nowhere, nothing to harm
        if harm > cfg.max_harm:
            return -float(harm - cfg.max_harm)  # below every feasible score, which is >= 0
        return 0.0 if math.isnan(gain) else float(gain)
    raise ValueError(f"unknown objective {cfg.objective!r}")


@dataclass(frozen=True)
class Labels:
    """The rows h is scored on: their true labels, f's labels, the classes (g's columns, in order) and the
    excluded class (None in the full model)."""

    y_true: np.ndarray
    pred_f: np.ndarray
    classes: list
    excluded: int | None


def best_threshold(proba, labels: Labels, policy: str, cfg, taus) -> tuple[float, float]:
    """The threshold among `taus` with the best objective_score of h (cfg: a CorrectorConfig), and that score.
    Ties go to the largest tau: of equally good corrections, the one that changes f least."""
    target, conf = targets(proba, labels.classes, policy, labels.excluded)
    return scan(target, conf, labels, cfg, taus)


def scan(target, conf, labels: Labels, cfg, taus) -> tuple[float, float]:
    """best_threshold for any per-row (target, conf), e.g. a detector's novelty score with target j:
    h = where(conf >= tau, target, f)."""
    taus = np.asarray(taus, dtype=float)
    preds = np.where(conf[None, :] >= taus[:, None], target[None, :], labels.pred_f[None, :])
    scores = np.array([objective_score(labels, p, cfg) for p in preds])
    i = len(scores) - 1 - int(np.argmax(scores[::-1]))
    return float(taus[i]), float(scores[i])


def best_choice(proba, labels: Labels, policies: list[str], cfg) -> tuple[float, float, str]:
    """(tau, score, policy): the best threshold of each allowed policy on a `tau_grid` in [0, 1), and
    the best of those. Costs no trials: it runs on one candidate's held-out probabilities."""
    taus = np.linspace(0.0, 1.0, cfg.tau_grid, endpoint=False)
    return max((best_threshold(proba, labels, p, cfg, taus) + (p,) for p in policies), key=lambda r: r[1])
