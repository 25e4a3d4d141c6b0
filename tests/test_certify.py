"""Certified Harm (`certify`): the bound holds as often as it promises, agrees with MAPIE's Learn-then-Test on
the same scores, and refuses calibration rows too few to certify anything, in one line."""
import numpy as np
import pytest
from scipy.stats import beta

from correctsweep import certify
from correctsweep.config import CorrectorConfig
from correctsweep.errors import CorrectsweepError
from correctsweep.metrics import harm_of
from correctsweep.policy import Labels

CLASSES, EXCLUDED = [0, 1, 2], 2
RIGHT_SCORE, WRONG_SCORE = (2, 5), (5, 2)  # g's probability of the excluded class: Beta on f's right / wrong rows


def draw(n: int, rng: np.random.Generator, right_share: float = 0.7):
    """Rows of a new_class corrector: f (never predicting the excluded class 2) is right on `right_share` of them,
    and g's probability of class 2 is Beta(2, 5) where f is right (a switch breaks the answer) and Beta(5, 2)
    where f is wrong. The true pooled Harm at tau is then the Beta(2, 5) tail: P(score >= tau)."""
    y = rng.choice(CLASSES, n)
    right = rng.random(n) < right_share
    pred_f = np.where(right, y, (y + 1) % 2)
    pred_f[(y != 2) & ~right] = 1 - y[(y != 2) & ~right]  # a wrong answer among the trained classes
    pred_f[y == 2] = rng.choice([0, 1], int((y == 2).sum()))  # f never predicts the excluded class
    right = pred_f == y
    score = np.where(right, rng.beta(*RIGHT_SCORE, n), rng.beta(*WRONG_SCORE, n))
    return Labels(y, pred_f, CLASSES, EXCLUDED), score


def true_harm(tau: float) -> float:
    return float(beta.sf(tau, *RIGHT_SCORE)) if np.isfinite(tau) else 0.0


CFG = CorrectorConfig(max_harm=0.1, confidence=0.9, tau_grid=100)  # a fine grid: the bound is near tight
RULE = certify.Rule.of(CFG)
TAUS = certify.corrector_taus(CFG)


def certified(labels, score, rule=RULE):
    return certify.certify(np.full(len(score), EXCLUDED), score, labels, rule, TAUS, CFG)


def test_the_bound_fails_at_most_as_often_as_it_promises():
    """400 calibration draws of 300 rows: the true Harm of the certified tau exceeds max_harm in at most
    delta = 10 % of them (within binomial noise), where taking the empirical Harm at face value fails far more."""
    rng = np.random.default_rng(0)
    ours, naive = [], []
    for _ in range(400):
        labels, score = draw(300, rng)
        ours.append(true_harm(certified(labels, score).tau) > CFG.max_harm)
        right = labels.y_true == labels.pred_f
        face_value = min(t for t in TAUS if (score[right] >= t).mean() <= CFG.max_harm)
        naive.append(true_harm(face_value) > CFG.max_harm)
    sd = np.sqrt(0.1 * 0.9 / 400)
    assert np.mean(ours) <= 0.1 + 3 * sd, np.mean(ours)
    assert np.mean(naive) > 0.3  # the test can fail: an uncertified tau breaks the promise often


def test_the_certified_taus_are_mapies():
    """MAPIE's BinaryClassificationController on the same scores (the rows f is right on are its negatives, Harm
    its false positive rate), with fixed-sequence testing, certifies the same taus up to its p-value: the smaller
    of the exact binomial tail (ours) and Hoeffding's, with the count of broken answers taken as ceil(n * rate),
    which floating point sometimes rounds up by one. So the lowest certified taus lie within a grid step or two."""
    from mapie.risk_control import BinaryClassificationController

    rng = np.random.default_rng(1)
    step = 1 / CFG.tau_grid
    for n in (150, 400, 1000):
        labels, score = draw(n, rng)
        positive = (labels.y_true != labels.pred_f).astype(int)  # where a switch is welcome
        controller = BinaryClassificationController(
            predict_function=lambda x: np.column_stack([1 - x, x]), risk="fpr", target_level=CFG.max_harm,
            confidence_level=CFG.confidence, list_predict_params=TAUS, fwer_method="fixed_sequence")
        controller.calibrate(score, positive)
        ours = set(certify.certified_taus(np.full(n, EXCLUDED), score, labels, RULE, TAUS))
        mapies = set(controller.valid_predict_params.tolist())
        assert ours and mapies
        assert abs(min(ours) - min(mapies)) <= 2 * step + 1e-9, (n, min(ours), min(mapies))
        assert len(ours ^ mapies) <= 2


def test_a_tau_is_chosen_among_the_certified_by_the_objective():
    labels, score = draw(2000, np.random.default_rng(2))
    found = certified(labels, score)
    broken, kept = certify.harm_counts(np.full(len(score), EXCLUDED), score, labels, found.tau)
    assert found.corrects and certify.upper_bound(broken.sum(), kept.sum(), RULE.delta) <= CFG.max_harm
    assert found.calibration_harm == pytest.approx(harm_of(broken, kept, "pooled"))
    assert found.certified_by == int((labels.y_true == labels.pred_f).sum())
    # a looser bound certifies lower taus, and the objective (balanced accuracy) takes one of them
    looser = certify.Rule(0.3, 0.9, "pooled")
    target = np.full(len(score), EXCLUDED)
    assert len(certify.certified_taus(target, score, labels, looser, TAUS)) > len(
        certify.certified_taus(target, score, labels, RULE, TAUS))
    assert certify.certify(target, score, labels, looser, TAUS, CFG).tau <= found.tau


def test_no_tau_certifies_then_h_is_f():
    """g sure of a switch on every answer f gets right: no tau certifies, and h = f (tau inf)."""
    labels, _ = draw(500, np.random.default_rng(3))
    right = labels.y_true == labels.pred_f
    found = certified(labels, np.where(right, 1.0, 0.5))
    assert not found.corrects and found.tau == certify.NO_CORRECTION and found.calibration_harm == 0
    # ranked the other way, the certified taus are those that switch none of f's right answers
    found = certified(labels, np.where(right, 0.9, 0.95))
    assert found.corrects and 0.9 < found.tau <= 0.95 and found.calibration_harm == 0


@pytest.mark.parametrize("measure, rows, says", [
    ("pooled", 10, "calibration rows where f is right, and it needs at least 22"),
    ("worst", 200, "the worst Harm needs about 22 in every class"),
    ("mean", 200, "the mean Harm needs about 29 in every class"),
])
def test_too_few_calibration_rows_is_one_line_with_the_size_needed(measure, rows, says):
    labels, score = draw(rows, np.random.default_rng(4))
    if measure != "pooled":  # one class with a handful of rows where f is right
        keep = np.flatnonzero((labels.y_true != 1) | (np.arange(rows) < 12))
        labels = Labels(labels.y_true[keep], labels.pred_f[keep], CLASSES, EXCLUDED)
        score = score[keep]
    with pytest.raises(CorrectsweepError, match=says) as error:
        certified(labels, score, certify.Rule(0.1, 0.9, measure))
    assert "\n" not in str(error.value) and "corrector.max_harm=0.1" in str(error.value)


def test_mean_and_worst_bounds_need_every_class():
    kept, broken = np.array([400, 400, 0]), np.array([4, 40, 0])
    pooled, mean, worst = (certify.Rule(0.1, 0.9, m).statistic(broken, kept) for m in ("pooled", "mean", "worst"))
    assert pooled < mean < worst  # the excluded class (f never right) has no Harm and is left out
    assert worst == pytest.approx(certify.upper_bound(40, 400, 0.1))
    assert mean == pytest.approx(certify.upper_bound(np.array([4, 40]), np.array([400, 400]), 0.05).mean())


def test_the_calibration_rows_are_a_stratified_share_apart_from_the_fit_rows():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    fit, calibration = certify.calibration_rows(labels, 0.3, seed=0)
    assert np.intersect1d(fit, calibration).size == 0 and len(fit) + len(calibration) == len(labels)
    assert np.bincount(labels[calibration]).tolist() == [30, 15, 3]
    assert np.array_equal(calibration, certify.calibration_rows(labels, 0.3, seed=0)[1])
