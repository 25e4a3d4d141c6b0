"""Label-free detectors from pytorch-ood: equal to the formulas they replaced where the definitions agree,
related to them as stated where they differ, every detector flagging a far excluded class, none fitted
on it, thresholds chosen on `correct`, and a spec naming a detector validated in one line."""
import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from correctsweep.config import CorrectorConfig, DetectorsConfig
from correctsweep.detectors import FinalLayer, detect, threshold, validate
from correctsweep.detectors.distance import KNNScore, KNNSettings
from correctsweep.errors import SpecError
from correctsweep.features import FeatureSet
from correctsweep.metrics import per_class
from correctsweep.plugins import DETECTORS
from correctsweep.stats import detection_metrics

KNN_K = KNNSettings().k
NAMES = DETECTORS.names()

CLASSES = [1, 2, 3, 4]
EXCLUDED = 3
D = 8
# f's final layer: the trained classes' rows point at their own feature axes; the excluded class's row is
# noise (f never trained it) and its logit is NaN in the logits tap
WEIGHT = np.zeros((4, D))
WEIGHT[[0, 1, 3], [0, 1, 2]] = 1.5
WEIGHT[2] = np.random.default_rng(42).normal(size=D)
BIAS = np.array([-3.0, -3.0, 0.0, -3.0])
LAYER = FinalLayer(WEIGHT, BIAS)


def tap_set(n, seed):
    """'fc': ReLU features, each class a unit blob 4 along its own axis (the excluded class's axis is one f's
    final layer ignores); 'logits': fc through the final layer, NaN in the excluded class's column."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, n)
    centres = np.zeros((4, D))
    centres[[0, 1, 2, 3], [0, 1, 3, 2]] = 4.0
    fc = np.maximum(centres[np.searchsorted(CLASSES, labels)] + rng.normal(size=(n, D)), 0).astype(np.float32)
    logits = (fc @ WEIGHT.T + BIAS).astype(np.float32)
    logits[:, CLASSES.index(EXCLUDED)] = np.nan
    pred_f = np.array(CLASSES)[np.nanargmax(logits, 1)]
    return FeatureSet(np.arange(n).astype(str), labels.astype(np.int64), pred_f.astype(np.int64),
                      {"fc": fc, "logits": logits}, {"classes": CLASSES, "excluded": EXCLUDED})


def scores(names, correct, test):
    return {d.name: d.score_test for d in detect(DetectorsConfig(names), "fc", correct, test, CorrectorConfig(), LAYER)}


def old_msp(logits):  # the hand-written formulas pytorch-ood replaced: the reference
    top = np.nanmax(logits, axis=1, keepdims=True)
    return 1.0 - 1.0 / np.nansum(np.exp(logits - top), axis=1)


def old_energy(logits):
    top = np.nanmax(logits, axis=1)
    return -(top + np.log(np.nansum(np.exp(logits - top[:, None]), axis=1)))


def test_msp_and_energy_equal_the_formulas_they_replace():
    correct, test = tap_set(200, 0), tap_set(300, 1)
    test.taps["logits"][:5] *= 30.0  # confident rows, where a naive softmax would overflow
    got = scores(["msp", "energy"], correct, test)
    logits = test.taps["logits"].astype(np.float64)
    assert np.abs(got["msp"] - old_msp(logits)).max() < 1e-12
    assert np.abs(got["energy"] - old_energy(logits)).max() < 1e-12


def test_msp_and_energy_order_known_logits():
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    msp, energy = DETECTORS.get("msp")(None).score(logits), DETECTORS.get("energy")(None).score(logits)
    assert msp.numpy() == pytest.approx([1 - 1 / (1 + 2 * np.exp(-10)), 2 / 3, 2 / 3,
                                         1 - 1 / (1 + np.exp(-1) + np.exp(-2))], rel=1e-6)
    assert energy.numpy() == pytest.approx([-(10 + np.log(1 + 2 * np.exp(-10))), -(1 + np.log(3)), -np.log(3),
                                            -(2 + np.log(1 + np.exp(-1) + np.exp(-2)))], rel=1e-6)
    assert list(np.argsort(energy.numpy())) == [0, 3, 1, 2]  # flat and low is the most novel


def fit_rows(fs):
    return fs.taps["fc"][fs.labels != EXCLUDED].astype(np.float64), fs.labels[fs.labels != EXCLUDED]


def test_mahalanobis_is_half_the_empirical_distance_over_n_and_orders_like_the_shrunk_one():
    """pytorch-ood inverts the within-class scatter (sum, not mean) plus a 1e-6 ridge, where the old
    detector inverted a Ledoit-Wolf shrunk covariance: equal to d2 / 2N under the empirical covariance,
    and on well-conditioned features ranked almost as the shrunk one."""
    correct, test = tap_set(400, 0), tap_set(300, 1)
    X, y = fit_rows(correct)
    means = np.stack([X[y == c].mean(0) for c in np.unique(y)])
    centred = X - means[np.searchsorted(np.unique(y), y)]
    T = test.taps["fc"].astype(np.float64)
    diff = T[:, None, :] - means[None]
    d2 = lambda precision: ((diff @ precision) * diff).sum(-1).min(1)
    empirical = d2(np.linalg.inv(centred.T @ centred / len(X)))
    got = scores(["mahalanobis"], correct, test)["mahalanobis"]
    assert got == pytest.approx(empirical / (2 * len(X)), rel=1e-6)
    shrunk = d2(LedoitWolf(assume_centered=True).fit(centred).precision_)
    ranks = lambda s: np.argsort(np.argsort(s))
    assert np.corrcoef(ranks(got), ranks(shrunk))[0, 1] > 0.99


def test_knn_equals_the_old_kth_distance_and_a_fit_row_skips_itself():
    correct, test = tap_set(200, 0), tap_set(30, 1)
    X, _ = fit_rows(correct)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)
    old = NearestNeighbors(n_neighbors=KNN_K + 1).fit(unit(X))
    expected_test = old.kneighbors(unit(test.taps["fc"].astype(np.float64)), KNN_K)[0][:, -1]
    assert np.abs(scores(["knn"], correct, test)["knn"] - expected_test).max() < 1e-5
    detector = KNNScore(None)
    x = torch.from_numpy(X.astype(np.float32))
    detector.fit(x, torch.zeros(len(x), dtype=torch.int64))
    expected_fit = old.kneighbors(unit(X))[0][:, KNN_K]  # its own row first, at distance 0
    assert np.abs(detector.score_fitted(x).numpy() - expected_fit).max() < 1e-5
    assert detector.score(x).numpy().mean() < expected_fit.mean()  # counting itself would score it lower


def test_at_least_ten_detectors_and_the_old_names():
    assert len(NAMES) >= 10 and {"msp", "energy", "mahalanobis", "knn"} <= set(NAMES)


def test_knn_s_k_is_its_setting():
    correct, test = tap_set(200, 0), tap_set(30, 1)
    near = detect(DetectorsConfig(["knn"], settings={"knn": KNNSettings(k=1)}), "fc", correct, test,
                  CorrectorConfig(), LAYER)[0].score_test
    assert (near < scores(["knn"], correct, test)["knn"]).all()  # the 1st neighbour is nearer than the 10th


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_flags_a_far_excluded_class(name):
    correct, test = tap_set(400, 0), tap_set(300, 1)
    (found,) = detect(DetectorsConfig([name]), "fc", correct, test, CorrectorConfig(), LAYER)
    table = per_class(test.labels, test.pred_f, found.pred_h, CLASSES)
    assert detection_metrics(test.labels == EXCLUDED, found.score_test).auroc > 0.95
    assert table.loc[EXCLUDED, "gain"] >= 0.75 and table["harm"].mean() <= 0.06
    assert found.score_test.shape == (300,) and np.isfinite(found.score_test).all()
    assert set(np.unique(found.pred_h)) <= set(CLASSES) and found.seconds >= 0


def test_no_detector_is_fitted_on_the_excluded_class():
    """Huge values on the excluded class's rows of `correct` leave every test score as it was."""
    correct, test = tap_set(300, 0), tap_set(80, 1)
    clean = scores(NAMES, correct, test)
    rows = correct.labels == EXCLUDED
    for values in correct.taps.values():
        values[rows] = values[rows] * 1e3 + 1e4  # NaN (the excluded logit) stays NaN
    poisoned = scores(NAMES, correct, test)
    for name in NAMES:
        assert np.array_equal(clean[name], poisoned[name]), name


def test_a_constant_score_runs_through_and_is_na_without_a_threshold():
    """Flat logits make msp constant; a final layer that gets one class right nowhere leaves SHE nothing to fit."""
    correct, test = tap_set(200, 0), tap_set(100, 1)
    for fs in (correct, test):
        fs.taps["logits"][:, [0, 1, 3]] = 0.0
    lopsided = FinalLayer(np.zeros_like(WEIGHT), np.array([1.0, 0.0, 0.0, 0.0]))  # always predicts class 1
    for name, layer in (("msp", LAYER), ("she", lopsided)):
        (found,) = detect(DetectorsConfig([name]), "fc", correct, test, CorrectorConfig(), layer)
        assert np.ptp(found.score_test) == 0 and np.isfinite(found.threshold)
        assert set(np.unique(found.pred_h)) <= set(CLASSES)
        assert detection_metrics(test.labels == EXCLUDED, found.score_test).reason == "the score is constant on test"


def test_threshold_is_chosen_on_correct_and_flags_nothing_when_nothing_helps():
    fs = tap_set(200, 0)
    score = (fs.labels == EXCLUDED).astype(float)  # a perfect detector: 1 on the excluded class
    cut, best = threshold(score, fs, EXCLUDED, CorrectorConfig())
    assert 0 < cut <= 1 and best == pytest.approx(1.0)  # balanced accuracy of h: every row right
    useless = -score  # flags the trained classes first: the best is to change nothing, above every score
    cut, best = threshold(useless, fs, EXCLUDED, CorrectorConfig())
    assert cut > useless.max()


@pytest.mark.parametrize("names, taps, has_layer, says", [
    (["msp", "odin"], ["logits"], False, "has no detector 'odin'"),
    (["knn", "knn"], ["fc"], False, "lists knn twice"),
    (["energy"], ["fc"], False, "energy reads the tap 'logits'"),
    (["rmd"], ["logits"], False, "'detectors.tap' names 'fc', which rmd reads"),
    (["vim"], ["fc", "logits"], False, "vim needs f's final layer"),
])
def test_validate_refuses_in_one_line(names, taps, has_layer, says):
    with pytest.raises(SpecError, match=says) as caught:
        validate(names, "fc", taps, has_layer)
    assert "\n" not in str(caught.value)


def test_validate_accepts_every_detector_given_its_inputs():
    validate(NAMES, "attn", ["attn", "fc", "logits"], True)
    with pytest.raises(SpecError, match="'penultimate'"):
        validate(["dice"], "fc", ["fc"], True, final_tap="penultimate")
