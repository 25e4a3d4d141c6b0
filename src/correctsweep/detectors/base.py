"""Label-free detectors of the unseen class: the new_class policy's reference, from pytorch-ood.

Each detector gives every image a novelty score (higher: more likely the class f never saw) from f's
stored logits or taps, and h flags the excluded class j where the score reaches a threshold: h = j if
score >= threshold, else f. The threshold is the one whose h scores best on `correct` by the corrector's
objective (policy.scan, ties to the largest: the one that changes f least), among the score's quantiles
on `correct` and one above them all (h = f). No detector is fitted on the excluded class: it is fitted
on the trained classes' rows of `correct` only, and the excluded class's labels serve only to pick that
one threshold, as they pick the correctors' tau. With corrector.max_harm the detectors meet the correctors'
bar: fitted on the fit part of `correct`, each threshold is certified on the same calibration rows, among the
quantiles of the fit rows' scores (see `certify`).

What each reads: `logits` (the logits tap; its NaN columns, the excluded class's, are dropped), the
spec's detectors.tap, or f's feature tap (the input of its final layer) together with that layer's
weight and bias (`FinalLayer`, rows of the excluded class dropped: f never trained them).

  from logits   msp         1 - largest softmax probability (Hendrycks & Gimpel, 2017): MaxSoftmax + 1
                energy      -logsumexp of the logits (Liu et al., 2020): EnergyBased
                maxlogit    -largest logit (Hendrycks et al., 2022): MaxLogit
                entropy     entropy of the softmax: Entropy
                gen         generalised entropy, gamma 0.1 over all classes (Liu et al., 2023): GEN
                klmatching  KL divergence of the softmax to the nearest class's mean softmax on the fit
                            rows (Hendrycks et al., 2022): KLMatching
  from the tap  mahalanobis half the squared Mahalanobis distance to the nearest class mean, one shared
                            covariance (Lee et al., 2018): Mahalanobis
                rmd         the relative Mahalanobis distance, less a background Gaussian's (Ren et al.,
                            2021): RMD
                knn         distance to the k-th nearest fit row (detectors.knn.k), rows L2-normalised (Sun et al.,
                            2022): KNN; a fit row never counts itself, or `correct`'s scores would run
                            lower than a new image's and the threshold picked there too low
  from features vim         residual norm off the principal subspace less the energy (Wang et al., 2022): ViM
  and the final dice        energy of a sparsified final layer, 90 % of weight contributions dropped as
  layer                     for the paper's CIFAR nets (Sun & Li, 2022): DICE
                react       energy after clipping the features at their 90th percentile (Sun et al., 2021)
                she         -inner product with the predicted class's mean correctly classified features
                            (Zhang et al., 2023): SHE
                nci         -cosine of the centred features with the predicted class's weights (Liu &
                            Qin, 2025): NCI
                fdbd        -mean distance to the decision boundaries over the distance to the fit mean
                            (Liu & Qin, 2024): fDBD

pytorch-ood's mahalanobis and rmd invert a scatter matrix (the within-class sum of outer products, not
its mean) plus 1e-6 on the diagonal: the score is d2 / (2 N) for the squared distance d2 under the
empirical covariance, up to that ridge, with no shrinkage. Two guards keep that inverse sound on a
ReLU tap: columns constant on the fit rows (dead units, which carry no covariance) are dropped, and it
is computed in float64, as are all but the final-layer detectors.

A detector is one `Detector` subclass that sets `name` (and `reads`, and its `Settings` if it has any):
defining it registers it in plugins.DETECTORS, which imports this package's modules on first look-up;
one outside the package is named in the spec as "package.module:Class".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from correctsweep import certify
from correctsweep.certify import Certificate
from correctsweep.config import CorrectorConfig, DetectorsConfig, settings_of
from correctsweep.errors import SpecError
from correctsweep.features import FeatureSet
from correctsweep.plugins import DETECTORS, Plugin
from correctsweep.policy import Labels, objective_score, scan

QUANTILES = 201  # thresholds in 0.5 % steps of the score: an excluded class can be ~2 % of the rows
LOGITS, TAP, FEATURES = "logits", "tap", "features"  # what a detector reads, see the module docstring


@dataclass(frozen=True)
class FinalLayer:
    """f's classifier on its feature tap: logits = features @ weight.T + bias, before the excluded class's mask."""

    weight: np.ndarray
    """float [K, d], rows in the order of the features' `classes`."""
    bias: np.ndarray
    """float [K]."""


@dataclass
class Detection:
    """One detector's threshold (chosen on `correct`) and its h on `test`."""

    name: str
    threshold: float
    correct_score: float
    """The objective of h at that threshold on `correct`, or on its calibration rows when certified (an in-sample
    figure: the threshold was chosen there)."""
    pred_h: np.ndarray
    seconds: float
    certificate: Certificate | None
    """The threshold's certified bound on Harm (corrector.max_harm), or None when uncertified."""
    score_test: np.ndarray
    """float64 [n]: the novelty score of each test image (higher: more likely the excluded class); it may be
    constant, e.g. where the detector had nothing to fit on, which threshold-free metrics report as n/a."""
    score_correct: np.ndarray
    """float64 [n]: the same on `correct`, where the threshold was chosen (the fit rows scored as `score_fitted`
    does: knn never counts a row as its own neighbour)."""


class Detector(Plugin):
    """A novelty score, fitted on the trained classes' rows of `correct` (never the excluded class's)."""

    registry = DETECTORS
    reads: ClassVar[str] = LOGITS
    """What it reads: LOGITS, TAP (detectors.tap) or FEATURES (f's feature tap, with f's final layer)."""

    def __init__(self, head: torch.nn.Linear | None, settings: Any = None):
        self.head = head
        """f's final layer over its trained classes (FEATURES detectors only)."""
        self.settings = settings if settings is not None else self.Settings()

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x [n, d], float32 for FEATURES detectors (f's final layer is float32), float64 for the others;
        y int64 [n], each row's class as its index among the trained classes."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_fitted(self, x: torch.Tensor) -> torch.Tensor:
        """The scores of the rows `fit` saw."""
        return self.score(x)


def _tap_read(name: str, tap: str, final_tap: str) -> str:
    """The tap a detector reads."""
    return {LOGITS: "logits", TAP: tap, FEATURES: final_tap}[DETECTORS.get(name).reads]


def validate(names: list[str], tap: str, taps: list[str], has_final_layer: bool, final_tap: str = "fc") -> None:
    """A SpecError in one line for the first of `names` that is unknown, repeated, or lacks its input: the
    tap it reads among `taps` (`tap` the detectors' tap, `final_tap` the input of f's final layer) or, for
    the detectors on f's final layer, that layer."""
    for i, name in enumerate(names):
        reads = DETECTORS.get(name).reads
        if name in names[:i]:
            raise SpecError(f"'detectors.names' lists {name} twice")
        read, saved = _tap_read(name, tap, final_tap), ", ".join(taps)
        if read not in taps and reads == TAP:
            raise SpecError(f"'detectors.tap' names '{read}', which {name} reads and features.taps ({saved}) "
                            "lacks; add it to features.taps or name a saved tap")
        if read not in taps:
            raise SpecError(f"'detectors.names': {name} reads the tap '{read}', which features.taps ({saved}) "
                            "lacks; add it to features.taps")
        if reads == FEATURES and not has_final_layer:
            raise SpecError(f"'detectors.names': {name} needs f's final layer (its weight and bias), which this run "
                            "lacks")


def _grid(score: np.ndarray) -> np.ndarray:
    """The thresholds tried: the score's quantiles and one above them all (h = f)."""
    return np.append(np.unique(np.quantile(score, np.linspace(0, 1, QUANTILES))), np.nextafter(score.max(), np.inf))


def _labels(fs: FeatureSet, excluded: int) -> Labels:
    return Labels(fs.labels, fs.pred_f, [int(c) for c in fs.meta["classes"]], excluded)


def threshold(score: np.ndarray, fs: FeatureSet, excluded: int, cfg: CorrectorConfig) -> tuple[float, float]:
    """(threshold, objective on `fs`) of the best h = where(score >= threshold, excluded, f)."""
    return scan(np.full(len(score), excluded), score, _labels(fs, excluded), cfg, _grid(score))


def certified_threshold(score: np.ndarray, fit: np.ndarray, correct: FeatureSet, excluded: int,
                        cfg: CorrectorConfig) -> tuple[Certificate, float]:
    """The certified threshold (corrector.max_harm) of h = where(score >= threshold, excluded, f) on `correct`'s
    calibration rows (not `fit`), among the quantiles of the fit rows' scores (which the calibration rows do not
    touch), and h's objective on the calibration rows there."""
    calibration = ~fit
    rows = correct.rows(np.flatnonzero(calibration))
    target = np.full(int(calibration.sum()), excluded)
    labels = _labels(rows, excluded)
    found = certify.certify(target, score[calibration], labels, certify.Rule.of(cfg), _grid(score[fit]), cfg)
    h = np.where(score[calibration] >= found.tau, excluded, rows.pred_f)
    return found, objective_score(labels, h, cfg)


def _head(layer: FinalLayer, rows: list[int], width: int) -> torch.nn.Linear:
    weight, bias = np.asarray(layer.weight, dtype=np.float32), np.asarray(layer.bias, dtype=np.float32)
    if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
        raise ValueError(f"final layer weight {weight.shape} and bias {bias.shape} do not fit features {width} wide")
    head = torch.nn.Linear(width, len(rows))
    head.weight.data, head.bias.data = torch.from_numpy(weight[rows]), torch.from_numpy(bias[rows])
    return head.requires_grad_(False)


def _numpy(score: torch.Tensor) -> np.ndarray:
    return score.detach().cpu().double().numpy()


def detect(detectors: DetectorsConfig, tap: str, correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig,
           final_layer: FinalLayer | None = None, final_tap: str = "fc") -> list[Detection]:
    """Run the spec's detectors in a fold with an excluded class: `tap` is detectors.tap resolved,
    `final_layer` f's final layer (over every class, the excluded one's row included) and `final_tap` the tap
    it reads. `cfg`: the corrector's objective picks each threshold, as it picks the correctors' tau."""
    names = detectors.names
    validate(names, tap, list(correct.taps), final_layer is not None, final_tap)
    excluded = int(correct.meta["excluded"])
    classes = [int(c) for c in correct.meta["classes"]]
    trained = np.array([c for c in classes if c != excluded])
    part = np.ones(len(correct.labels), dtype=bool)  # the fit part of `correct`: all of it when uncertified
    if cfg.max_harm is not None:  # the corrector's calibration rows certify the threshold: nothing is fitted on them
        part[certify.calibration_rows(correct.labels, cfg.calibration_fraction, cfg.seed)[1]] = False
    fit = part & np.isin(correct.labels, trained)  # the only rows any detector is fitted on
    y = torch.from_numpy(np.argmax(correct.labels[fit, None] == trained[None, :], axis=1))
    out = []
    for name in names:
        started = time.perf_counter()
        read = _tap_read(name, tap, final_tap)
        on_correct, on_test = correct.taps[read], test.taps[read]
        head = None
        cls = DETECTORS.get(name)
        if cls.reads == FEATURES:
            head = _head(final_layer, [classes.index(c) for c in trained], on_correct.shape[1])
        else:
            columns = ~np.isnan(on_correct[fit]).any(0)  # the logits' excluded column: f never trained it
            # float64: 1 - softmax of a confident row, a difference of near-equal numbers, is all rounding in float32
            on_correct, on_test = on_correct[:, columns].astype(np.float64), on_test[:, columns].astype(np.float64)
        x, x_test = torch.from_numpy(np.ascontiguousarray(on_correct)), torch.from_numpy(np.ascontiguousarray(on_test))
        detector = cls(head, settings_of(detectors, name))
        with torch.no_grad():
            detector.fit(x[fit], y)
            score = np.empty(len(x))
            score[fit] = _numpy(detector.score_fitted(x[fit]))
            if not fit.all():
                score[~fit] = _numpy(detector.score(x[~fit]))
            score_test = _numpy(detector.score(x_test))
        found = None
        if cfg.max_harm is None:
            cut, objective = threshold(score, correct, excluded, cfg)
        else:
            found, objective = certified_threshold(score, part, correct, excluded, cfg)
            cut = found.tau
        out.append(Detection(name, cut, objective, np.where(score_test >= cut, excluded, test.pred_f),
                             time.perf_counter() - started, found, score_test, score))
    return out
