import math
import warnings

import numpy as np
import pandas as pd
import pytest

from correctsweep.metrics import (
    METRIC_COLUMNS,
    balanced_accuracy,
    format_value,
    harm,
    macro_f1,
    per_class,
    summary,
)

NAN = float("nan")

# Hand example: 12 samples, classes 1..5; class 4 never occurs in y (N_4 = 0), f never gets
# class 5 right (|A_5| = 0), f gets all of class 2 right (|Abar_2| = 0), f predicts an
# unknown label 9 and h an unlisted-by-truth class 4.
Y = [1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 5, 5]
YF = [1, 1, 1, 2, 2, 2, 2, 1, 3, 9, 3, 1]
YH = [1, 1, 2, 2, 2, 2, 2, 3, 3, 4, 5, 2]
CLASSES = [1, 2, 3, 4, 5]

# Worked by hand from the definitions (see the comments per row).
EXPECTED = {
    # N=4, A={0,1,2}, B={0,1}, Abar={3}; f-false-positives {7,11}/8, h none.
    1: dict(n=4, tpr_f=3 / 4, tpr_h=2 / 4, delta=-1 / 4, ratio=(1 / 2) / (3 / 4), retention=2 / 3,
            harm=1 / 3, gain=0.0, fpr_f=2 / 8, fpr_h=0.0, dfpr=-2 / 8),
    # N=3, A=B=J, Abar empty -> gain NaN; f-fp {3}/9, h-fp {2,3,11}/9.
    2: dict(n=3, tpr_f=1.0, tpr_h=1.0, delta=0.0, ratio=1.0, retention=1.0, harm=0.0, gain=NAN,
            fpr_f=1 / 9, fpr_h=3 / 9, dfpr=2 / 9),
    # N=3, A={8}, B={7,8}, Abar={7,9}; f-fp {10}/9, h none.
    3: dict(n=3, tpr_f=1 / 3, tpr_h=2 / 3, delta=1 / 3, ratio=2.0, retention=1.0, harm=0.0,
            gain=1 / 2, fpr_f=1 / 9, fpr_h=0.0, dfpr=-1 / 9),
    # N=0: every ratio over J is NaN; f-fp none/12, h-fp {9}/12.
    4: dict(n=0, tpr_f=NAN, tpr_h=NAN, delta=NAN, ratio=NAN, retention=NAN, harm=NAN, gain=NAN,
            fpr_f=0.0, fpr_h=1 / 12, dfpr=1 / 12),
    # N=2, A empty -> retention/harm NaN and ratio NaN (tpr_f = 0), B={10}, Abar={10,11}; no false positives.
    5: dict(n=2, tpr_f=0.0, tpr_h=1 / 2, delta=1 / 2, ratio=NAN, retention=NAN, harm=NAN,
            gain=1 / 2, fpr_f=0.0, fpr_h=0.0, dfpr=0.0),
}


def assert_close(actual, expected, rel=1e-9):
    if math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, rel=rel, abs=1e-12)


def test_per_class_hand_example():
    table = per_class(Y, YF, YH, CLASSES)
    assert list(table.columns) == METRIC_COLUMNS
    assert table.index.name == "class"
    assert list(table.index) == CLASSES
    assert pd.api.types.is_integer_dtype(table["n"])
    for cls, row in EXPECTED.items():
        for col, value in row.items():
            assert_close(table.loc[cls, col], value)


def test_single_class_test_set_has_nan_fpr():
    table = per_class([1, 1, 1], [1, 2, 1], [1, 1, 1], [1, 2])
    # Class 1 is every sample, so N - N_1 = 0.
    assert math.isnan(table.loc[1, "fpr_f"]) and math.isnan(table.loc[1, "fpr_h"])
    assert math.isnan(table.loc[1, "dfpr"])
    assert_close(table.loc[1, "tpr_f"], 2 / 3)
    assert_close(table.loc[1, "gain"], 1.0)
    assert_close(table.loc[2, "fpr_f"], 1 / 3)
    assert_close(table.loc[2, "fpr_h"], 0.0)
    assert math.isnan(table.loc[2, "tpr_f"])


def test_class_order_and_labels_preserved():
    table = per_class([30, 10, 20], [30, 10, 10], [30, 20, 20], [30, 10, 20])
    assert list(table.index) == [30, 10, 20]
    assert list(table["tpr_f"]) == [1.0, 1.0, 0.0]
    assert list(table["tpr_h"]) == [1.0, 0.0, 1.0]


def _joint_reference(y, yf, yh, classes):
    """Per-class metrics from a (y, yf, yh) count cube built sample by sample."""
    k = len(classes)
    position = {c: i for i, c in enumerate(classes)}
    cube = np.zeros((k + 1, k + 1, k + 1), dtype=int)
    for a, b, c in zip(y, yf, yh):
        cube[position.get(a, k), position.get(b, k), position.get(c, k)] += 1
    total = cube.sum()

    def div(num, den):
        return num / den if den else NAN

    rows = {}
    for i, cls in enumerate(classes):
        n = cube[i].sum()
        a = cube[i, i, :].sum()
        b = cube[i, :, i].sum()
        ab = cube[i, i, i]
        fp_f = cube[:, i, :].sum() - a
        fp_h = cube[:, :, i].sum() - b
        tpr_f, tpr_h = div(a, n), div(b, n)
        fpr_f, fpr_h = div(fp_f, total - n), div(fp_h, total - n)
        rows[cls] = dict(n=n, tpr_f=tpr_f, tpr_h=tpr_h, delta=tpr_h - tpr_f,
                         ratio=div(tpr_h, tpr_f), retention=div(ab, a), harm=div(a - ab, a),
                         gain=div(b - ab, n - a), fpr_f=fpr_f, fpr_h=fpr_h, dfpr=fpr_h - fpr_f)
    return rows


def _random_case(seed, k):
    rng = np.random.default_rng(seed)
    classes = list(rng.choice(np.arange(-20, 100), size=k, replace=False))
    n = int(rng.integers(1, 60))
    # Leave the last class out of y some of the time, to exercise N_i = 0.
    y_pool = classes[:-1] if seed % 2 else classes
    y = rng.choice(y_pool, size=n)
    # f only ever predicts the first half of the classes; h predicts any class or unknown labels.
    f_pool = classes[: max(1, k // 2)]
    yf = np.where(rng.random(n) < 0.5, y, rng.choice(f_pool, size=n))
    yh = np.where(rng.random(n) < 0.5, y, rng.choice(classes + [1000, -1000], size=n))
    return y, yf, yh, classes


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("seed", range(8))
def test_matches_joint_confusion_reference(seed, k):
    y, yf, yh, classes = _random_case(seed, k)
    table = per_class(y, yf, yh, classes)
    expected = _joint_reference(y.tolist(), yf.tolist(), yh.tolist(), classes)
    for cls, row in expected.items():
        for col, value in row.items():
            assert_close(table.loc[cls, col], value)

    retention, harm, gain = table["retention"], table["harm"], table["gain"]
    defined = retention.notna()
    assert (harm.notna() == defined).all()
    assert np.allclose(retention[defined] + harm[defined], 1.0)
    assert retention[defined].between(0, 1).all()
    assert gain.dropna().between(0, 1).all()

    # With every true label listed, the N_i-weighted tpr is plain accuracy.
    stats = summary(y, yf, yh, classes)
    assert_close(stats["micro_tpr_f"], stats["accuracy_f"])
    assert_close(stats["micro_tpr_h"], stats["accuracy_h"])


def test_summary_hand_example():
    stats = summary(Y, YF, YH, CLASSES)
    expected_keys = {"accuracy_f", "accuracy_h", "balanced_accuracy_f", "balanced_accuracy_h",
                     "macro_f1_f", "macro_f1_h"}
    expected_keys |= {f"{agg}_{m}" for m in METRIC_COLUMNS[1:] for agg in ("macro", "micro")} | {"pooled_harm"}
    assert set(stats) == expected_keys
    assert all(isinstance(v, float) for v in stats.values())

    assert_close(stats["accuracy_f"], 7 / 12)
    assert_close(stats["accuracy_h"], 8 / 12)
    # Recall over the classes present in y (1, 2, 3, 5).
    assert_close(stats["balanced_accuracy_f"], (3 / 4 + 1 + 1 / 3 + 0) / 4)
    assert_close(stats["balanced_accuracy_h"], (2 / 4 + 1 + 2 / 3 + 1 / 2) / 4)
    # F1 = 2TP / (N_i + predicted_i); class 4 is neither true nor f-predicted, so NaN for f,
    # but h predicts it once, so it counts as 0 for h.
    assert_close(stats["macro_f1_f"], (6 / 9 + 6 / 7 + 2 / 5 + 0) / 4)
    assert_close(stats["macro_f1_h"], (4 / 6 + 6 / 9 + 4 / 5 + 0 + 2 / 3) / 5)

    # NaN entries (classes 4 and 5) are left out of both means.
    assert_close(stats["macro_retention"], (2 / 3 + 1 + 1) / 3)
    assert_close(stats["micro_retention"], (4 * 2 / 3 + 3 * 1 + 3 * 1) / 10)
    # h breaks one of f's 3 + 3 + 1 right answers (classes 1, 2, 3)
    assert_close(stats["pooled_harm"], 1 / 7)
    assert_close(harm(Y, YF, YH, CLASSES, "mean"), stats["macro_harm"])
    assert_close(harm(Y, YF, YH, CLASSES, "worst"), 1 / 3)
    assert_close(stats["macro_gain"], (0 + 1 / 2 + 1 / 2) / 3)
    assert_close(stats["micro_gain"], (4 * 0 + 3 / 2 + 2 / 2) / 9)
    assert_close(stats["macro_fpr_h"], (0 + 1 / 3 + 0 + 1 / 12 + 0) / 5)
    # Class 5's ratio (tpr_f = 0) is undefined and left out, as is class 4's.
    assert_close(stats["macro_ratio"], ((1 / 2) / (3 / 4) + 1 + 2) / 3)


def test_macro_and_micro_differ_on_imbalanced_classes():
    y = [1] * 8 + [2] * 2
    yf = [1] * 10
    yh = [1] * 6 + [2] * 4
    stats = summary(y, yf, yh, [1, 2])
    assert_close(stats["macro_tpr_f"], (1 + 0) / 2)
    assert_close(stats["micro_tpr_f"], 0.8 * 1 + 0.2 * 0)
    assert_close(stats["macro_tpr_h"], (6 / 8 + 1) / 2)
    assert_close(stats["micro_tpr_h"], 0.8 * 6 / 8 + 0.2 * 1)
    assert_close(stats["balanced_accuracy_f"], 0.5)
    assert_close(stats["accuracy_f"], 0.8)


def test_standalone_scores():
    assert_close(balanced_accuracy([1, 1, 2, 2], [1, 2, 2, 2], [1, 2, 3]), (1 / 2 + 1) / 2)
    # Class 3 never true and never predicted: left out of macro-F1.
    assert_close(macro_f1([1, 1, 2, 2], [1, 2, 2, 2], [1, 2, 3]), (2 / 3 + 4 / 5) / 2)
    assert math.isnan(macro_f1([1, 1], [1, 1], [2, 3]))


def test_format_value():
    assert format_value(NAN) == "n/a"
    assert format_value(np.nan) == "n/a"
    assert format_value(0.123456) == "0.123"
    assert format_value(2.0, digits=1) == "2.0"


def test_no_warnings_on_nan_results():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        per_class([1, 1], [2, 2], [1, 1], [1, 2])
        summary([1, 1], [2, 2], [1, 1], [1, 2, 3])


@pytest.mark.parametrize(
    "args",
    [
        ([1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3]),
        ([1, 2, 3], [1, 2, 3], [1, 2], [1, 2, 3]),
        ([1, 2, 3], [1, 2, 3], [1, 2, 3], []),
    ],
)
def test_invalid_inputs_raise(args):
    with pytest.raises(ValueError):
        per_class(*args)
    with pytest.raises(ValueError):
        summary(*args)


def test_mismatched_lengths_raise_for_scores():
    with pytest.raises(ValueError, match="length"):
        balanced_accuracy([1, 2], [1], [1, 2])
    with pytest.raises(ValueError, match="length"):
        macro_f1([1, 2], [1], [1, 2])
