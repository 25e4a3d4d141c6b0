"""Label-free detectors of the unseen class: the baselines of the new_class policy.

Each detector gives every image a novelty score (higher: more likely the class f never saw) from f
alone or from a tap's geometry around the trained classes' rows of `correct`, and h flags the excluded
class j where the score reaches a threshold: h = j if score >= threshold, else f. The threshold is the
one whose h scores best on `correct` by the corrector's objective (policy.scan, ties to the largest:
the one that changes f least), among the score's quantiles on `correct` and one above them all (h = f).
No detector is fitted on the excluded class: its labels serve only to pick that one threshold, as
they pick the correctors' tau.

  msp          1 - f's largest softmax probability over its trained classes (Hendrycks & Gimpel, 2017).
  energy       -logsumexp of f's logits over its trained classes (Liu et al., 2020).
  mahalanobis  the smallest Mahalanobis distance on the tap to a trained class's mean, with one shared
               covariance (Lee et al., 2018), Ledoit-Wolf shrunk: a tap has ~100 or more columns and
               `correct` a few hundred rows, too few for a well-conditioned empirical covariance.
  knn          the distance on the tap to the KNN_K-th nearest trained-class row of `correct`, rows
               L2-normalised (Sun et al., 2022). A `correct` row never counts itself: its score would
               otherwise be lower than a new image's, and the threshold picked on `correct` too low.
The `logits` tap holds NaN in the excluded class's column (f never trained it); every detector
ignores NaN columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from correctsweep.config import CorrectorConfig
from correctsweep.errors import SpecError
from correctsweep.features import FeatureSet
from correctsweep.policy import scan

KNN_K = 10  # Sun et al. use k = 50 on ImageNet-sized sets; `correct` here has a few hundred rows per class
QUANTILES = 201  # thresholds in 0.5 % steps of the score: an excluded class can be ~2 % of the rows


@dataclass
class Detection:
    """One detector's threshold (chosen on `correct`) and its h on `test`."""

    name: str
    threshold: float
    correct_score: float
    """The objective of h on `correct` at that threshold (an in-sample figure: one number was fitted)."""
    pred_h: np.ndarray
    seconds: float


def msp(logits: np.ndarray) -> np.ndarray:
    top = np.nanmax(logits, axis=1, keepdims=True)
    return 1.0 - 1.0 / np.nansum(np.exp(logits - top), axis=1)  # the top class's exp term is 1


def energy(logits: np.ndarray) -> np.ndarray:
    top = np.nanmax(logits, axis=1)
    return -(top + np.log(np.nansum(np.exp(logits - top[:, None]), axis=1)))


def mahalanobis(correct: np.ndarray, test: np.ndarray, reference: np.ndarray, labels: np.ndarray):
    columns = ~np.isnan(correct[reference]).any(0)
    ref, y = correct[reference][:, columns].astype(np.float64), labels[reference]
    classes = np.unique(y)
    means = np.stack([ref[y == c].mean(0) for c in classes])
    precision = LedoitWolf(assume_centered=True).fit(ref - means[np.searchsorted(classes, y)]).precision_

    def score(X: np.ndarray) -> np.ndarray:
        diff = X[:, columns][:, None, :] - means[None]  # [n, classes, d]
        return ((diff @ precision) * diff).sum(-1).min(1)
    return score(correct), score(test)


def knn(correct: np.ndarray, test: np.ndarray, reference: np.ndarray, labels: np.ndarray):
    columns = ~np.isnan(correct[reference]).any(0)
    unit = lambda X: X[:, columns] / np.maximum(np.linalg.norm(X[:, columns], axis=1, keepdims=True), 1e-12)
    k = min(KNN_K, int(reference.sum()) - 1)
    index = NearestNeighbors(n_neighbors=k + 1).fit(unit(correct[reference]))
    near = index.kneighbors(unit(correct))[0]  # a reference row is its own nearest: skip that one
    return np.where(reference, near[:, k], near[:, k - 1]), index.kneighbors(unit(test), k)[0][:, -1]


# name -> (the tap it reads, None for spec.baselines_tap; the scores of `correct` and `test`)
DETECTORS = {
    "msp": ("logits", lambda c, t, ref, y: (msp(c), msp(t))),
    "energy": ("logits", lambda c, t, ref, y: (energy(c), energy(t))),
    "mahalanobis": (None, mahalanobis),
    "knn": (None, knn),
}


def check_inputs(names: list[str], tap: str, taps: list[str]) -> None:
    """A SpecError in one line when a named detector's input is not among the saved taps."""
    for name in names:
        reads = DETECTORS[name][0] or tap
        if reads not in taps:
            key = "baselines_tap" if DETECTORS[name][0] is None else "features.taps"
            raise SpecError(f"baselines: {name} reads the tap '{reads}', which features.taps ({', '.join(taps)}) "
                            f"lacks; add it to features.taps or change {key}")


def threshold(score: np.ndarray, fs: FeatureSet, excluded: int, cfg: CorrectorConfig) -> tuple[float, float]:
    """(threshold, objective on `fs`) of the best h = where(score >= threshold, excluded, f)."""
    taus = np.append(np.unique(np.quantile(score, np.linspace(0, 1, QUANTILES))), np.nextafter(score.max(), np.inf))
    classes = [int(c) for c in fs.meta["classes"]]
    return scan(np.full(len(score), excluded), score, fs.labels, fs.pred_f, classes, excluded, cfg.objective,
                cfg.harm_bound, taus)


def detect(names: list[str], tap: str, correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig) -> list[Detection]:
    """Run the named detectors (`tap`: what mahalanobis and knn measure) in a fold with an excluded class."""
    excluded = int(correct.meta["excluded"])
    reference = correct.labels != excluded  # the trained classes' rows: the only ones any detector fits
    out = []
    for name in names:
        started = time.perf_counter()
        reads, scores = DETECTORS[name]
        reads = reads or tap
        on_correct, on_test = scores(correct.taps[reads], test.taps[reads], reference, correct.labels)
        cut, score = threshold(on_correct, correct, excluded, cfg)
        out.append(Detection(name, cut, score, np.where(on_test >= cut, excluded, test.pred_f),
                             time.perf_counter() - started))
    return out
