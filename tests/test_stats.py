"""Statistics with known answers: exact McNemar and Holm on hand-computable tables, AUROC / AUPR / FPR@95
of scores whose ranking is known, the stratified bootstrap against the metrics' own figures, t-intervals
over seeds, and n/a (never NaN bounds or a traceback) where a figure is undefined."""
import math

import numpy as np
import pytest

from correctsweep import metrics
from correctsweep.config import spec_from_dict
from correctsweep.errors import SpecError
from correctsweep.stats import (
    FIGURES,
    Interval,
    Resampling,
    bootstrap_intervals,
    bootstrap_power,
    compare_methods,
    detection_metrics,
    draws,
    format_interval,
    mcnemar_exact,
    paired_tests,
    seed_summary,
)

CLASSES = [1, 2, 3, 4, 5, 6, 7]
EXCLUDED = 3


def fold(n, seed):
    """A fold's test images: f never predicts the excluded class and is right ~70 % elsewhere; h recovers
    ~half the excluded class and breaks ~5 % of f's right answers."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, n)
    others = [c for c in CLASSES if c != EXCLUDED]
    pred_f = np.where((labels != EXCLUDED) & (rng.random(n) < 0.7), labels, rng.choice(others, n))
    pred_h = np.where((labels == EXCLUDED) & (rng.random(n) < 0.5), EXCLUDED, pred_f)
    pred_h = np.where((pred_h == labels) & (labels != EXCLUDED) & (rng.random(n) < 0.05), rng.choice(others, n), pred_h)
    return labels, pred_f, pred_h


def outcomes(right, n=20):
    out = np.zeros(n, dtype=bool)
    out[list(right)] = True
    return out


def test_mcnemar_exact_on_hand_tables():
    # discordant pairs 1 (a only) and 5 (b only): p = 2 P(X <= 1 | 6, 1/2) = 2 * 7 / 64
    a = outcomes(list(range(10)) + [10])
    b = outcomes(list(range(10)) + [11, 12, 13, 14, 15])
    assert mcnemar_exact(a, b) == pytest.approx(14 / 64)
    assert mcnemar_exact(outcomes(range(8)), outcomes([])) == pytest.approx(2 / 2 ** 8)
    assert mcnemar_exact(a, a) == pytest.approx(1.0)  # no discordant pair: no evidence of a difference


def test_compare_methods_holm_and_ties_with_the_best():
    published = outcomes(range(10))
    methods = {"published": published,
               "a": outcomes(range(18)),                                  # 8 discordant, all a's: p = 2/2^8
               "b": outcomes(list(range(9)) + [10, 11, 12, 13, 14]),     # 1 vs 5: p = 14/64
               "c": outcomes(range(14))}                                  # 0 vs 4: p = 2/2^4
    got = compare_methods(methods, "published", alpha=0.05)
    assert got["published"].p is None and got["published"].rate == 0.5
    assert [got[m].p for m in "abc"] == pytest.approx([2 / 256, 14 / 64, 2 / 16])
    # Holm over (2/256, 14/64, 1/8): sorted times 3, 2, 1 and made monotone: 3 * 2/256, then max(2/8, 14/64)
    assert [got[m].p_holm for m in "abc"] == pytest.approx([6 / 256, 0.25, 0.25])
    # the best is a (18/20); a vs published, b, c: p = 2/256, 2/16, 2/16 -> Holm 6/256, 0.25, 0.25
    assert {m: c.ties_best for m, c in got.items()} == {"published": False, "a": True, "b": True, "c": True}


def test_paired_tests_recover_the_excluded_class_or_say_there_is_none():
    labels, pred_f, pred_h = fold(400, 0)
    got = paired_tests(labels, {"xgboost": pred_h, "f": pred_f}, "xgboost", EXCLUDED)
    recovered = np.sum((labels == EXCLUDED) & (pred_h == EXCLUDED))  # every one a discordant pair
    assert got["recovery"]["f"].rate == 0.0 and got["recovery"]["f"].p == pytest.approx(2 * 0.5 ** recovered)
    assert got["recovery"]["xgboost"].ties_best and not got["recovery"]["f"].ties_best
    assert got["correct"]["xgboost"].rate == pytest.approx(np.mean(pred_h == labels))
    keep = labels != EXCLUDED
    assert paired_tests(labels[keep], {"xgboost": pred_h[keep], "f": pred_f[keep]}, "xgboost",
                        EXCLUDED)["recovery"] == {}


def test_detection_metrics_of_known_rankings():
    rng = np.random.default_rng(0)
    positive = np.arange(200) < 50
    perfect = positive + rng.random(200) * 0.5
    assert detection_metrics(positive, perfect).auroc == 1.0
    assert detection_metrics(positive, perfect).aupr == 1.0
    assert detection_metrics(positive, perfect).fpr_at_95_tpr == 0.0
    assert detection_metrics(positive, -perfect).auroc == 0.0
    big = rng.random(20000) < 0.2
    assert detection_metrics(big, rng.random(20000)).auroc == pytest.approx(0.5, abs=0.02)
    # 20 positives 10..29; negatives 0..8 and 11.5: 95 % TPR needs the cut at 11, which flags 11.5 alone
    score = np.r_[np.arange(10, 30), np.arange(9), 11.5]
    assert detection_metrics(np.arange(30) < 20, score).fpr_at_95_tpr == pytest.approx(0.1)


@pytest.mark.parametrize("positive, score, reason", [
    (np.zeros(10, bool), np.arange(10.0), "no image of the excluded class in test"),
    (np.arange(10) < 3, np.full(10, 0.2), "the score is constant on test"),
])
def test_detection_metrics_na(positive, score, reason):
    got = detection_metrics(positive, score)
    assert got.reason == reason and got.auroc is None and got.fpr_at_95_tpr is None


def test_bootstrap_point_estimates_are_the_metrics_own_and_intervals_cover_them():
    labels, pred_f, pred_h = fold(1500, 0)
    got = bootstrap_intervals(labels, pred_f, pred_h, CLASSES, EXCLUDED, Resampling(500))
    summary = metrics.summary(labels, pred_f, pred_h, CLASSES)
    table = metrics.per_class(labels, pred_f, pred_h, CLASSES)
    expected = {"gain_excluded": table.at[EXCLUDED, "gain"], "tpr_h_excluded": table.at[EXCLUDED, "tpr_h"]}
    expected |= {k: summary[k] for k in FIGURES if k not in expected}
    assert set(got) == set(FIGURES)
    for name, interval in got.items():
        assert interval.reason is None and interval.value == pytest.approx(expected[name], abs=1e-12)
        assert interval.lo <= interval.value <= interval.hi and interval.lo < interval.hi, name
    assert bootstrap_intervals(labels, pred_f, pred_h, CLASSES, EXCLUDED, Resampling(500)) == got  # seeded


def test_bootstrap_intervals_shrink_with_the_test_set():
    width = lambda n: (lambda i: i.hi - i.lo)(bootstrap_intervals(*fold(n, 1), CLASSES, EXCLUDED,
                                                                  Resampling(400))["gain_excluded"])
    assert width(6400) < 0.6 * width(400)  # ~1/sqrt(n): a quarter, give or take resampling noise


def test_draws_are_stratified_by_true_class():
    labels = fold(300, 2)[0]
    index = draws(labels, 50, seed=3)
    per_class = np.array([[np.sum(labels[row] == c) for c in CLASSES] for row in index])
    assert (per_class == [np.sum(labels == c) for c in CLASSES]).all()
    assert len({tuple(row) for row in index}) == 50  # and the resamples differ


def test_bootstrap_na_where_the_figure_is_undefined():
    labels, pred_f, pred_h = fold(500, 0)
    keep = labels != EXCLUDED
    got = bootstrap_intervals(labels[keep], pred_f[keep], pred_h[keep], CLASSES, EXCLUDED, Resampling(200))
    assert got["gain_excluded"] == Interval.na(f"no image of class {EXCLUDED} in test")
    assert got["macro_harm"].reason is None
    full = bootstrap_intervals(labels, pred_f, pred_f, CLASSES, None, Resampling(200))
    assert full["tpr_h_excluded"].reason == "no excluded class (the full model)"
    assert str(full["tpr_h_excluded"]) == "n/a (no excluded class (the full model))"


def test_power_is_one_against_itself_and_na_without_a_full_model_hit():
    labels, pred_f, pred_h = fold(800, 0)
    assert bootstrap_power(labels, pred_h, pred_h, CLASSES, EXCLUDED, Resampling(200)) == Interval(1.0, 1.0, 1.0)
    full = np.where(labels == EXCLUDED, EXCLUDED, pred_f)  # the full model knows the class perfectly
    p = bootstrap_power(labels, pred_h, full, CLASSES, EXCLUDED, Resampling(200))
    own = labels == EXCLUDED
    assert p.value == pytest.approx(np.mean(pred_h[own] == EXCLUDED)) and p.lo < p.value < p.hi
    assert bootstrap_power(labels, pred_h, pred_f, CLASSES, EXCLUDED).reason == (
        f"the full model recognises no image of class {EXCLUDED} in test")


def test_seed_summary_t_interval():
    got = seed_summary([1.0, 2.0, 3.0, float("nan")])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df) * s / sqrt(n), s = 1
    assert (got.n, got.mean, got.std) == (3, 2.0, 1.0)
    assert (got.interval.lo, got.interval.hi) == pytest.approx((2 - half, 2 + half))
    two = seed_summary([0.4, 0.5])
    assert two.std == pytest.approx(math.sqrt(0.005)) and two.interval.reason == "2 seeds; an interval needs 3"
    assert seed_summary([0.3, 0.3, 0.3]).interval == Interval(0.3, 0.3, 0.3)
    assert seed_summary([float("nan")]).interval.reason == "undefined in every seed"


def test_format_interval():
    assert format_interval(Interval(0.4567, 0.41, 0.5)) == "0.457 [0.41, 0.50]"
    assert str(Interval.na("no image of class 3 in test")) == "n/a (no image of class 3 in test)"


@pytest.mark.parametrize("report, key", [({"bootstrap": 99}, "report.bootstrap"),
                                         ({"bootstrap": 1000.5}, "report.bootstrap"),
                                         ({"level": 1.0}, "report.level"),
                                         ({"level": 0.5}, "report.level")])
def test_report_config_check(report, key):
    with pytest.raises(SpecError, match=f"'{key}'") as caught:
        spec_from_dict({"report": report})
    assert "\n" not in str(caught.value)
    assert spec_from_dict({}).report.bootstrap == 1000


def test_holm_is_statsmodels_holm():
    """stats._holm (written out: statsmodels' calls gc.collect() each time) gives multipletests' figures."""
    from statsmodels.stats.multitest import multipletests

    from correctsweep.stats import _holm

    rng = np.random.default_rng(0)
    # few calls: each of statsmodels' costs a gc.collect(), most of this test's time
    for p in (rng.random(1), rng.random(5) ** 4, np.round(rng.random(17), 1)):  # ties among the last
        reject, corrected, _, _ = multipletests(p, alpha=0.05, method="holm")
        got, rejected = _holm({f"m{i}": v for i, v in enumerate(p)}, 0.05)
        assert list(got.values()) == pytest.approx(corrected.tolist())
        assert list(rejected.values()) == reject.tolist()
