"""Corrector kinds with known answers: linearly separable features, the multi-corrector's clusters,
the linear models' arithmetic, and every kind reloaded from its workdir."""
import json

import numpy as np
import pytest

from correctsweep import config
from correctsweep.config import CorrectorConfig, from_mapping
from correctsweep.corrector import _setup, search
from correctsweep.corrector_store import load_result, predict_proba
from correctsweep.errors import SpecError
from correctsweep.features import FeatureSet
from correctsweep.kinds.linear import Fisher, LinearModel
from correctsweep.metrics import per_class
from correctsweep.plugins import KINDS

CLASSES = [1, 2, 3, 4]
EXCLUDED = 3


def separable_set(n, seed, excluded=EXCLUDED):
    """Every class shifts its own 'fc' column by 5 (unit noise), so a linear rule separates each one from
    the rest; 'noise' is noise. f is right on every trained class and calls the excluded one another class."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, n)
    fc = rng.normal(size=(n, 6)).astype(np.float32)
    fc[np.arange(n), np.searchsorted(CLASSES, labels)] += 5.0
    others = [c for c in CLASSES if c != excluded]
    pred_f = np.where(labels == excluded, rng.choice(others, n), labels)
    return FeatureSet(np.array([f"s{seed}_{i}" for i in range(n)]), labels.astype(np.int64), pred_f.astype(np.int64),
                      {"fc": fc, "noise": rng.normal(size=(n, 5)).astype(np.float32)},
                      {"classes": CLASSES, "excluded": excluded})


def cfg_for(kind, **kw):
    return from_mapping(CorrectorConfig, {"kind": kind, "n_candidates": 6, "cv_splits": 3, "tau_grid": 21, "seed": 0,
                                          "xgboost": {"max_rounds": 30, "early_stopping_rounds": 5}} | kw, "corrector")


def test_the_spec_takes_every_registered_kind_and_each_kind_checks_its_own_settings():
    spec = config.spec_from_dict({"corrector": {"kinds": KINDS.names(), "kind": "fisher"}})
    assert spec.corrector.all_kinds == KINDS.names()
    for overrides, key in ((["corrector.xgboost.pca_dims=0"], "pca_dims"),
                           (["corrector.fisher.whiten_dims=[4, null]"], "whiten_dims"),
                           (["corrector.xgboost.max_rounds=0"], "max_rounds")):
        with pytest.raises(SpecError, match=key):
            config.spec_from_dict({}, overrides)


@pytest.mark.parametrize("kind", ["fisher", "logistic"])
def test_linear_kinds_recover_a_linearly_separable_excluded_class(tmp_path, kind):
    correct, test = separable_set(400, 0), separable_set(300, 1)
    result = search(correct, test, cfg_for(kind), tmp_path, threads=1)
    table = per_class(test.labels, test.pred_f, result.pred_h, CLASSES)
    assert table.loc[EXCLUDED, "gain"] >= 0.97
    assert table["harm"].mean() <= 0.01
    assert result.kind == kind and result.n_rounds is None and result.pca_dims >= 1 and result.refit_seconds > 0


@pytest.mark.parametrize("kind", ["xgboost", "fisher", "logistic"])
def test_a_saved_kind_reloads_to_its_test_probabilities(tmp_path, kind):
    correct, test = separable_set(240, 0), separable_set(120, 1)
    result = search(correct, test, cfg_for(kind, n_candidates=3), tmp_path, threads=1)
    best = json.loads((tmp_path / "winner.json").read_text())
    assert best["kind"] == kind and (tmp_path / KINDS.get(kind).model_file).is_file()
    assert np.allclose(predict_proba(tmp_path, test), result.proba, atol=1e-6)
    assert np.allclose(predict_proba(tmp_path, test).sum(1), 1, atol=1e-5)
    assert (load_result(tmp_path).pred_h == result.pred_h).all() and load_result(tmp_path).kind == kind


def test_fisher_clusters_separate_an_excluded_class_in_two_blobs():
    # 2-D: the trained classes stacked on the y axis, the excluded class in two blobs at x = -6 and x = +6.
    # Its mean sits among the others, so one discriminant finds at most one blob (no line puts both blobs
    # on one side and their midpoint, class 2, on the other); one per cluster (k = 2) finds both.
    rng = np.random.default_rng(0)
    centres = {1: [(0, 3)], 2: [(0, 0)], 4: [(0, -3)], EXCLUDED: [(-6, 0), (6, 0)]}
    labels = np.repeat(CLASSES, 60)
    X = np.vstack([rng.normal(centres[c][i % len(centres[c])], 0.5, size=(1, 2)) for i, c in enumerate(labels)])
    fs = FeatureSet(np.arange(len(labels)).astype(str), labels, labels, {"fc": X.astype(np.float32)},
                    {"classes": CLASSES, "excluded": EXCLUDED})
    fisher = Fisher(_setup(fs, fs, cfg_for("fisher"), 1, None))
    y = np.searchsorted(CLASSES, labels)
    found = {k: fisher.fit(X, y, {"shrinkage": 0.01, "clusters": k}).predict_proba(X).argmax(1) for k in (1, 2)}
    target = labels == EXCLUDED
    assert (found[2][target] == CLASSES.index(EXCLUDED)).mean() >= 0.95
    assert (found[1][target] == CLASSES.index(EXCLUDED)).mean() <= 0.55
    assert (found[2][~target] == y[~target]).mean() >= 0.95  # and the trained classes keep their own


def test_linear_model_takes_each_class_best_discriminant():
    # class 0 owns discriminants 0 and 2, class 1 owns discriminant 1
    model = LinearModel(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), np.array([0.0, 0.5, 0.0]),
                        np.array([0, 1, 0]), "ovr")
    X = np.array([[2.0, 0.0], [-3.0, 1.0]])
    assert model.scores(X).tolist() == [[2.0, 0.5], [3.0, 1.5]]
    sig = lambda s: 1 / (1 + np.exp(-np.asarray(s)))
    assert np.allclose(model.predict_proba(X)[0], sig([2.0, 0.5]) / sig([2.0, 0.5]).sum())
    soft = LinearModel(model.coef, model.intercept, model.owner, "softmax").predict_proba(X)[1]
    assert np.allclose(soft, np.exp([3.0, 1.5]) / np.exp([3.0, 1.5]).sum())


def test_fold_none_searches_no_clusters(tmp_path):
    full, test = separable_set(200, 0, excluded=None), separable_set(80, 1, excluded=None)
    result = search(full, test, cfg_for("fisher", n_candidates=2), tmp_path, threads=1)
    assert set(result.params) == {"shrinkage"} and result.policy == "override"
