"""Label-free detectors with known answers: MSP and energy orderings, exact distances, thresholds
chosen on `correct`, and no detector fitted on the excluded class."""
import numpy as np
import pytest

from correctsweep.baselines import KNN_K, detect, energy, knn, mahalanobis, msp, threshold
from correctsweep.config import CorrectorConfig
from correctsweep.features import FeatureSet
from correctsweep.metrics import per_class

CLASSES = [1, 2, 3, 4]
EXCLUDED = 3
NAN = np.nan


def test_msp_and_energy_on_known_logits():
    logits = np.array([[10.0, 0.0, NAN, 0.0],    # confident: the least novel for both
                       [1.0, 1.0, NAN, 1.0],     # flat
                       [0.0, 0.0, NAN, 0.0],     # flat and low: energy calls it more novel, MSP cannot tell
                       [2.0, 1.0, NAN, 0.0]])
    assert msp(logits) == pytest.approx([1 - 1 / (1 + 2 * np.exp(-10)), 2 / 3, 2 / 3,
                                         1 - 1 / (1 + np.exp(-1) + np.exp(-2))])
    assert energy(logits) == pytest.approx([-(10 + np.log(1 + 2 * np.exp(-10))), -(1 + np.log(3)), -np.log(3),
                                            -(2 + np.log(1 + np.exp(-1) + np.exp(-2)))])
    assert list(np.argsort(msp(logits), kind="stable")) == [0, 3, 1, 2]
    assert list(np.argsort(energy(logits))) == [0, 3, 1, 2]


def tap_set(n, seed, far=8.0):
    """'fc': the trained classes as unit blobs around distinct centres in the x-y plane, the excluded class
    `far` up the z axis (knn compares directions: it is orthogonal to the others there too);
    'logits': confident on the trained classes, flat on the excluded one (NaN in its column)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, n)
    centres = np.array([[0, 4, 0], [0, -4, 0], [0, 0, far], [4, 0, 0]], dtype=float)
    fc = (centres[np.searchsorted(CLASSES, labels)] + rng.normal(size=(n, 3))).astype(np.float32)
    others = [c for c in CLASSES if c != EXCLUDED]
    pred_f = np.where(labels == EXCLUDED, rng.choice(others, n), labels)
    logits = np.where(labels[:, None] == EXCLUDED, 0.0, 6.0 * (np.array(CLASSES)[None, :] == labels[:, None]))
    logits = (logits + rng.normal(scale=0.3, size=logits.shape)).astype(np.float32)
    logits[:, CLASSES.index(EXCLUDED)] = NAN
    return FeatureSet(np.arange(n).astype(str), labels.astype(np.int64), pred_f.astype(np.int64),
                      {"fc": fc, "logits": logits}, {"classes": CLASSES, "excluded": EXCLUDED})


@pytest.mark.parametrize("name", ["msp", "energy", "mahalanobis", "knn"])
def test_detectors_flag_a_far_excluded_class(name):
    correct, test = tap_set(400, 0), tap_set(300, 1)
    (found,) = detect([name], "fc", correct, test, CorrectorConfig())
    table = per_class(test.labels, test.pred_f, found.pred_h, CLASSES)
    assert table.loc[EXCLUDED, "gain"] >= 0.95 and table["harm"].mean() <= 0.02
    assert set(np.unique(found.pred_h)) <= set(CLASSES) and found.seconds >= 0


@pytest.mark.parametrize("detector", [mahalanobis, knn])
def test_geometric_detectors_never_fit_the_excluded_class(detector):
    correct, test = tap_set(300, 0), tap_set(50, 1)
    reference = correct.labels != EXCLUDED
    before = detector(correct.taps["fc"], test.taps["fc"], reference, correct.labels)
    moved = correct.taps["fc"].copy()
    moved[~reference] += 100.0  # the excluded class's rows elsewhere: only their own scores may change
    after = detector(moved, test.taps["fc"], reference, correct.labels)
    assert np.allclose(before[0][reference], after[0][reference]) and np.allclose(before[1], after[1])


def test_knn_is_the_kth_distance_and_a_correct_row_skips_itself():
    correct, test = tap_set(120, 0), tap_set(10, 1)
    reference = correct.labels != EXCLUDED
    on_correct, on_test = knn(correct.taps["fc"], test.taps["fc"], reference, correct.labels)
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)
    ref = unit(correct.taps["fc"][reference])
    brute = lambda x, skip_self: np.sort(np.linalg.norm(ref - x, axis=1))[KNN_K if skip_self else KNN_K - 1]
    assert on_test == pytest.approx([brute(x, False) for x in unit(test.taps["fc"])], abs=1e-5)
    rows = unit(correct.taps["fc"])
    assert on_correct == pytest.approx([brute(x, r) for x, r in zip(rows, reference)], abs=1e-5)


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean():
    correct, test = tap_set(300, 0), tap_set(20, 1)
    reference = correct.labels != EXCLUDED
    _, on_test = mahalanobis(correct.taps["fc"], test.taps["fc"], reference, correct.labels)
    from sklearn.covariance import LedoitWolf

    X, y = correct.taps["fc"][reference].astype(float), correct.labels[reference]
    means = {c: X[y == c].mean(0) for c in np.unique(y)}
    precision = LedoitWolf(assume_centered=True).fit(X - np.stack([means[c] for c in y])).precision_
    expected = [min((x - m) @ precision @ (x - m) for m in means.values()) for x in test.taps["fc"].astype(float)]
    assert on_test == pytest.approx(expected, rel=1e-6)


def test_threshold_is_chosen_on_correct_and_flags_nothing_when_nothing_helps():
    fs = tap_set(200, 0)
    score = (fs.labels == EXCLUDED).astype(float)  # a perfect detector: 1 on the excluded class
    cut, best = threshold(score, fs, EXCLUDED, CorrectorConfig())
    assert 0 < cut <= 1 and best == pytest.approx(1.0)  # balanced accuracy of h: every row right
    useless = -score  # flags the trained classes first: the best is to change nothing, above every score
    cut, best = threshold(useless, fs, EXCLUDED, CorrectorConfig())
    assert cut > useless.max()
