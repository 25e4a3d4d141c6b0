"""Per-class metrics of a base classifier f and its corrected system h.

For class i on a test set of N samples, with J_i = {y = i} and N_i = |J_i|:

    A_i = {j in J_i : yf = i}     B_i = {j in J_i : yh = i}     Abar_i = J_i \\ A_i

    tpr_f = |A_i| / N_i            tpr_h = |B_i| / N_i            delta = tpr_h - tpr_f
    ratio = tpr_h / tpr_f
    retention = |A_i & B_i| / |A_i|     harm = |A_i \\ B_i| / |A_i|     gain = |B_i \\ A_i| / |Abar_i|
    fpr_f = |{y != i, yf = i}| / (N - N_i)     fpr_h likewise ("spill")     dfpr = fpr_h - fpr_f

A ratio with a zero denominator is NaN and is left out of every mean: `ratio` too, where tpr_f = 0
(SPEC §2's tpr_h / (tpr_f + eps) would be a meaningless 1e11 there and swamp the macro mean).
Predictions of labels outside `classes` are wrong for every listed class; true labels outside
`classes` count in N only.
Aggregates: macro = nanmean over classes; micro = mean weighted by N_i / N, with the weights
renormalised over the classes where the metric is defined; pooled Harm = sum_i |A_i \\ B_i| / sum_i |A_i|, the
share of all of f's correct answers that h breaks (what a certified bound holds by default, see `certify`).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["n", "tpr_f", "tpr_h", "delta", "ratio", "retention", "harm", "gain", "fpr_f", "fpr_h", "dfpr"]


def _prepare(classes, *labels):
    classes = np.asarray(classes)
    if classes.size == 0:
        raise ValueError("classes must not be empty")
    if np.unique(classes).size != classes.size:
        raise ValueError(f"classes must be distinct, got {classes.tolist()}")
    arrays = [np.asarray(a).ravel() for a in labels]
    if len({a.size for a in arrays}) > 1:
        raise ValueError(f"label arrays differ in length: {[a.size for a in arrays]}")
    # Map each label to its position in `classes`, or K for a label that is not listed.
    k = classes.size
    order = np.argsort(classes)
    sorted_classes = classes[order]
    indices = []
    for a in arrays:
        pos = np.clip(np.searchsorted(sorted_classes, a), 0, k - 1)
        indices.append(np.where(sorted_classes[pos] == a, order[pos], k))
    return classes, indices


def positions(classes, labels) -> np.ndarray:
    """Each label's position in `classes`, or len(classes) for a label not listed."""
    return _prepare(classes, labels)[1][0]


def _count(index, k, mask=None):
    """Per-class counts of `index` (restricted to `mask`), dropping the unlisted bin K."""
    if mask is not None:
        index = index[mask]
    return np.bincount(index, minlength=k + 1)[:k]


def _ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def nanmean(values, weights=None) -> float:
    """Mean over the defined (non-NaN) values, optionally weighted; NaN when none is defined."""
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    defined = ~np.isnan(values)
    total = weights[defined].sum()
    return float((weights[defined] * values[defined]).sum() / total) if total > 0 else float("nan")


@dataclass
class Counts:
    """The per-class counts every metric derives from: arrays [..., K] in `classes` order, where a
    leading axis (e.g. bootstrap resamples) holds one set of counts per weighting of the samples."""

    n: np.ndarray
    """|J_i|."""
    hit_f: np.ndarray
    """|A_i|."""
    hit_h: np.ndarray
    """|B_i|."""
    hit_both: np.ndarray
    """|A_i & B_i|."""
    pred_f: np.ndarray
    """Samples f labels i, right or wrong."""
    pred_h: np.ndarray
    """Samples h labels i."""
    total: np.ndarray
    """N, shape [...]."""


def counts(y_true, y_f, y_h, classes, weights=None) -> Counts:
    """Counts of `classes` in y_true, y_f, y_h. `weights` [R, N] (how often each sample is drawn, say)
    gives R sets of counts at once: one matrix product, where R calls of per_class would cost R tables."""
    classes, (t, f, h) = _prepare(classes, y_true, y_f, y_h)
    k = classes.size
    onehot = lambda index: index[:, None] == np.arange(k)  # [N, K]; the unlisted bin K matches no column
    truth = onehot(t)
    hit_f, hit_h = (t == f)[:, None] & truth, (t == h)[:, None] & truth
    columns = np.concatenate([truth, hit_f, hit_h, hit_f & hit_h, onehot(f), onehot(h)], axis=1)
    w = np.ones(t.size) if weights is None else np.asarray(weights, dtype=float)
    n, a, b, ab, pf, ph = np.split(w @ columns, 6, axis=-1)
    return Counts(n, a, b, ab, pf, ph, w.sum(-1))


def rates(c: Counts) -> dict[str, np.ndarray]:
    """METRIC_COLUMNS from counts, each an array of the counts' shape."""
    rest = c.total[..., None] - c.n
    tpr_f, tpr_h = _ratio(c.hit_f, c.n), _ratio(c.hit_h, c.n)
    fpr_f, fpr_h = _ratio(c.pred_f - c.hit_f, rest), _ratio(c.pred_h - c.hit_h, rest)
    return {"n": c.n, "tpr_f": tpr_f, "tpr_h": tpr_h, "delta": tpr_h - tpr_f, "ratio": _ratio(tpr_h, tpr_f),
            "retention": _ratio(c.hit_both, c.hit_f), "harm": _ratio(c.hit_f - c.hit_both, c.hit_f),
            "gain": _ratio(c.hit_h - c.hit_both, c.n - c.hit_f), "fpr_f": fpr_f, "fpr_h": fpr_h,
            "dfpr": fpr_h - fpr_f}


def macro(values: np.ndarray) -> np.ndarray:
    """nanmean over the last axis (the classes), NaN where no class is defined, without nanmean's warning."""
    defined = ~np.isnan(values)
    return _ratio(np.where(defined, values, 0.0).sum(-1), defined.sum(-1))


def per_class(y_true, y_f, y_h, classes) -> pd.DataFrame:
    """One row per class (index = class label, named 'class'), columns METRIC_COLUMNS; 'n' is int."""
    table = pd.DataFrame(rates(counts(y_true, y_f, y_h, classes)), index=pd.Index(classes, name="class"))
    table["n"] = table["n"].astype(int)
    return table[METRIC_COLUMNS]


HARM_MEASURES = ("pooled", "mean", "worst")


def harm_of(broken, kept, measure: str):
    """Harm from per-class counts [..., K], `kept` of f's correct answers and `broken` of them by h: pooled (the
    share of all of f's correct answers that h breaks), mean (the mean over classes of Harm_i) or worst (the
    largest Harm_i). Classes f is never right on have no Harm; NaN where f is right nowhere. A float for one
    set of counts, else an array of the leading shape."""
    broken, kept = np.asarray(broken, dtype=float), np.asarray(kept, dtype=float)
    if measure == "pooled":
        out = _ratio(broken.sum(-1), kept.sum(-1))
    elif measure == "mean":
        out = macro(_ratio(broken, kept))
    elif measure == "worst":
        rates = _ratio(broken, kept)
        out = np.where(np.isnan(rates).all(-1), np.nan, np.where(np.isnan(rates), -np.inf, rates).max(-1))
    else:
        raise ValueError(f"unknown Harm measure {measure!r}; one of {', '.join(HARM_MEASURES)}")
    return float(out) if np.ndim(out) == 0 else out


def harm(y_true, y_f, y_h, classes, measure: str) -> float:
    """harm_of h's labels against f's."""
    c = counts(y_true, y_f, y_h, classes)
    return harm_of(c.hit_f - c.hit_both, c.hit_f, measure)


def _accuracy(y_true, y_pred, classes) -> float:
    classes, (t, p) = _prepare(classes, y_true, y_pred)
    return float(np.sum((t == p) & (t < classes.size)) / t.size) if t.size else float("nan")


def balanced_accuracy(y_true, y_pred, classes) -> float:
    """Mean recall over the classes that occur in y_true."""
    classes, (t, p) = _prepare(classes, y_true, y_pred)
    k = classes.size
    return nanmean(_ratio(_count(t, k, t == p), _count(t, k)))


def macro_f1(y_true, y_pred, classes) -> float:
    """Mean F1 over classes; a class never true and never predicted has F1 NaN and is left out."""
    classes, (t, p) = _prepare(classes, y_true, y_pred)
    k = classes.size
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (true count + predicted count).
    return nanmean(_ratio(2 * _count(t, k, t == p), _count(t, k) + _count(p, k)))


def summary(y_true, y_f, y_h, classes) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of f and h, plus macro_/micro_ means of each metric."""
    table = per_class(y_true, y_f, y_h, classes)
    out = {}
    for name, pred in (("f", y_f), ("h", y_h)):
        out[f"accuracy_{name}"] = _accuracy(y_true, pred, classes)
        out[f"balanced_accuracy_{name}"] = balanced_accuracy(y_true, pred, classes)
        out[f"macro_f1_{name}"] = macro_f1(y_true, pred, classes)
    weights = table["n"].to_numpy(dtype=float)
    for m in METRIC_COLUMNS[1:]:
        out[f"macro_{m}"] = nanmean(table[m])
        out[f"micro_{m}"] = nanmean(table[m], weights)
    out["pooled_harm"] = harm(y_true, y_f, y_h, classes, "pooled")
    return out


def format_value(x: float, digits: int = 3) -> str:
    """'n/a' for NaN, else fixed-point with `digits` decimals."""
    return "n/a" if np.isnan(x) else f"{x:.{digits}f}"
