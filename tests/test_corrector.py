import json
from dataclasses import fields

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb

from correctsweep.config import CorrectorConfig, from_mapping
from correctsweep.corrector import STUDY_NAME, search
from correctsweep.corrector_store import CorrectorRecord, load_result, predict_proba
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet
from correctsweep.metrics import balanced_accuracy, macro_f1, per_class
from correctsweep.policy import Labels, apply_policy, best_threshold, objective_score, policies_for

CLASSES = [1, 2, 3, 4]
EXCLUDED = 3


def feature_set(n, seed, excluded=EXCLUDED, counts=None):
    """Learnable toy features: 'fc' separates every class, 'softmax' echoes f, 'noise' is noise.
    f is right 85% of the time on the other classes and never predicts the excluded one."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES, counts) if counts else rng.choice(CLASSES, n)
    idx = np.searchsorted(CLASSES, labels)
    others = [c for c in CLASSES if c != excluded]
    pred_f = np.where(rng.random(len(labels)) < 0.85, labels, rng.choice(others, len(labels)))
    pred_f = np.where(pred_f == excluded, rng.choice(others, len(labels)), pred_f)
    fc = rng.normal(size=(len(labels), 8)).astype(np.float32)
    fc[np.arange(len(labels)), idx] += 3.0
    softmax = np.eye(len(CLASSES), dtype=np.float32)[np.searchsorted(CLASSES, pred_f)]
    noise = rng.normal(size=(len(labels), 6)).astype(np.float32)
    return FeatureSet(np.array([f"s{seed}_{i}" for i in range(len(labels))]), labels.astype(np.int64),
                      pred_f.astype(np.int64), {"fc": fc, "softmax": softmax, "noise": noise},
                      {"classes": CLASSES, "excluded": excluded})


def small_cfg(**kw):
    """A small search; the xgboost kind's own settings among `kw` go under corrector.xgboost."""
    xgboost = {"max_rounds": 30, "early_stopping_rounds": 5} | {
        key: kw.pop(key) for key in ("max_rounds", "early_stopping_rounds", "pca_dims") if key in kw}
    return from_mapping(CorrectorConfig, {"n_candidates": 3, "cv_splits": 3, "tau_grid": 11, "seed": 0,
                                          "xgboost": xgboost} | kw, "corrector")


# apply_policy: rows (proba, f) -> override target/conf and new_class conf
PROBA = np.array([[0.10, 0.60, 0.20, 0.10],   # f=1: override -> 2 (0.6); p(3) = 0.2
                  [0.70, 0.10, 0.10, 0.10],   # f=1: argmax is f already; p(3) = 0.1
                  [0.05, 0.05, 0.90, 0.00],   # f=4: override -> 3 (0.9); p(3) = 0.9
                  [0.25, 0.25, 0.30, 0.20]])  # f=2: override -> 3 (0.3); p(3) = 0.3
PRED_F = np.array([1, 1, 4, 2])


@pytest.mark.parametrize("policy,tau,expected", [
    ("override", 0.0, [2, 1, 3, 3]),
    ("override", 0.5, [2, 1, 3, 2]),
    ("override", 0.8, [1, 1, 3, 2]),
    ("override", 0.95, [1, 1, 4, 2]),
    ("new_class", 0.0, [3, 3, 3, 3]),
    ("new_class", 0.25, [1, 1, 3, 3]),
    ("new_class", 0.5, [1, 1, 3, 2]),
    ("new_class", 0.95, [1, 1, 4, 2]),
])
def test_apply_policy(policy, tau, expected):
    assert apply_policy(PROBA, PRED_F, CLASSES, policy, tau, EXCLUDED).tolist() == expected


def test_apply_policy_new_class_needs_excluded():
    with pytest.raises(ValueError):
        apply_policy(PROBA, PRED_F, CLASSES, "new_class", 0.5, None)


def test_best_threshold_finds_the_right_tau():
    # A: f wrong, g right with p=0.72; B: f right, g wrong with p=0.68; C: g agrees with f.
    # Only tau in (0.68, 0.72] takes all of A and none of B; on a 0.05 grid that is 0.70 alone.
    y = np.array([1] * 20 + [2] * 20 + [4] * 20)
    f = np.array([2] * 20 + [2] * 20 + [4] * 20)
    proba = np.zeros((60, 4))
    proba[:20] = [0.72, 0.28, 0, 0]
    proba[20:40] = [0, 0.32, 0.68, 0]
    proba[40:] = [0, 0, 0.1, 0.9]
    taus = np.linspace(0, 1, 20, endpoint=False)
    labels, cfg = Labels(y, f, CLASSES, EXCLUDED), CorrectorConfig(objective="balanced_accuracy")
    tau, score = best_threshold(proba, labels, "override", cfg, taus)
    assert tau == pytest.approx(0.70)
    assert score == pytest.approx(1.0)
    # new_class only ever switches to 3, which is never right here: the best is to change nothing
    tau, score = best_threshold(proba, labels, "new_class", cfg, taus)
    assert tau == pytest.approx(0.95) and score == pytest.approx(balanced_accuracy(y, f, CLASSES))


def test_objective_score():
    y = np.array([1, 1, 2, 2, 3, 3])
    f = np.array([1, 1, 2, 2, 1, 2])
    h_good = np.array([1, 1, 2, 2, 3, 1])   # gain(3) = 1/2, no harm
    h_harm = np.array([3, 1, 2, 2, 3, 3])   # gain(3) = 1, harm(1) = 1/2, harm(2) = 0 -> mean 1/4, pooled 1/4, worst 1/2
    labels = Labels(y, f, CLASSES, EXCLUDED)
    score = lambda h, objective, bound=0.05, measure="mean", at=labels: objective_score(
        at, h, CorrectorConfig(objective=objective, max_harm=bound, harm_measure=measure))
    assert score(h_good, "balanced_accuracy") == pytest.approx(balanced_accuracy(y, h_good, CLASSES))
    assert score(h_good, "macro_f1") == pytest.approx(macro_f1(y, h_good, CLASSES))
    assert score(h_good, "gain_at_harm") == pytest.approx(0.5)
    assert score(h_harm, "gain_at_harm", 0.30) == pytest.approx(1.0)
    # infeasible: minus the excess harm, below any feasible score; by the measure max_harm bounds
    assert score(h_harm, "gain_at_harm", 0.05) == pytest.approx(-0.20)
    assert score(h_harm, "gain_at_harm", 0.05, "pooled") == pytest.approx(-0.20)
    assert score(h_harm, "gain_at_harm", 0.05, "worst") == pytest.approx(-0.45)
    # no excluded class: macro Gain (only class 3 has a defined Gain here)
    assert score(h_good, "gain_at_harm", at=Labels(y, f, CLASSES, None)) == pytest.approx(0.5)


def test_search_recovers_the_excluded_class(tmp_path):
    correct, test = feature_set(240, 0), feature_set(200, 1)
    calls = []
    result = search(correct, test, small_cfg(n_candidates=4), tmp_path, threads=1, on_candidate=calls.append)
    assert result.n_candidates == 4 and len(calls) == 4
    assert per_class(test.labels, test.pred_f, result.pred_h, CLASSES).loc[EXCLUDED, "gain"] > 0
    assert result.proba.shape == (200, 4) and result.seconds_per_candidate > 0
    assert set(result.taps) <= {"fc", "softmax", "noise"} and result.policy in ("override", "new_class")

    booster = xgb.Booster(model_file=str(tmp_path / "model.ubj"))
    assert booster.num_boosted_rounds() == result.n_rounds
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(table.columns) == ["split", "sample_id", "label", "pred_f", "pred_h", "p_1", "p_2", "p_3", "p_4"]
    assert (table["pred_h"].to_numpy() == result.pred_h).all()
    best = json.loads((tmp_path / "winner.json").read_text())
    assert best["tau"] == result.tau and best["n_candidates"] == 4 and best["objective"] == "balanced_accuracy"
    assert set(best) == {f.name for f in fields(CorrectorRecord)}  # the record: no per-image arrays

    # a finished search is loaded, not refitted
    mtime = (tmp_path / "model.ubj").stat().st_mtime_ns
    again = search(correct, test, small_cfg(n_candidates=4), tmp_path, threads=1, on_candidate=calls.append)
    assert len(calls) == 4 and (tmp_path / "model.ubj").stat().st_mtime_ns == mtime
    assert again.tau == result.tau and np.allclose(again.proba, result.proba)
    assert (load_result(tmp_path).pred_h == result.pred_h).all()

    # killed after the search but before winner.json: the rerun refits without new trials
    (tmp_path / "winner.json").unlink()
    refit = search(correct, test, small_cfg(n_candidates=4), tmp_path, threads=1, on_candidate=calls.append)
    assert len(calls) == 4 and (tmp_path / "winner.json").exists()
    assert (refit.pred_h == result.pred_h).all() and refit.n_candidates == 4


def test_resume_runs_only_missing_trials(tmp_path):
    correct, test = feature_set(150, 0), feature_set(60, 1)
    first, second = [], []
    search(correct, test, small_cfg(n_candidates=2), tmp_path, threads=1, on_candidate=first.append)
    result = search(correct, test, small_cfg(n_candidates=4), tmp_path, threads=1, on_candidate=second.append)
    assert [c["candidate"] for c in first] == [0, 1] and [c["candidate"] for c in second] == [2, 3]
    assert result.n_candidates == 4
    study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(tmp_path))
    params = [t.params for t in study.trials]
    assert params[2] not in params[:2] and params[3] not in params[:2]  # no replay of the start-up


def _storage(path):
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path / "study.journal")))


def test_resume_after_a_kill(tmp_path):
    correct, test = feature_set(150, 0), feature_set(60, 1)

    def die(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(correct, test, small_cfg(), tmp_path, threads=1, on_candidate=die)
    # a SIGKILL mid-trial leaves it RUNNING in the journal
    study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(tmp_path))
    stale = study.ask()
    eta = stale.suggest_float("eta", 0.02, 0.3, log=True)

    calls = []
    result = search(correct, test, small_cfg(), tmp_path, threads=1, on_candidate=calls.append)
    assert [c["candidate"] for c in calls] == [2, 3]  # trial 0 is kept, the stale trial 1 is not counted
    assert result.n_candidates == 3
    trials = optuna.load_study(study_name=STUDY_NAME, storage=_storage(tmp_path)).trials
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[2].params["eta"] == pytest.approx(eta)  # its parameters were re-enqueued


def test_user_errors(tmp_path):
    correct, test = feature_set(120, 0), feature_set(40, 1)
    with pytest.raises(CorrectsweepError, match="tap 'nope'"):
        search(correct, test, small_cfg(), tmp_path, threads=1, taps=["fc", "nope"])
    tiny = feature_set(0, 0, counts=[30, 30, 30, 2])
    with pytest.raises(CorrectsweepError, match="class 4 has 2 sample"):
        search(tiny, test, small_cfg(), tmp_path, threads=1)


def test_full_model_uses_override_where_the_spec_asks_only_new_class(tmp_path):
    # one rule, in policy.py, for trial.py and the search alike
    assert policies_for(["new_class"], None) == ["override"]
    assert policies_for(["override", "new_class"], None) == ["override"]
    assert policies_for(["new_class"], 3) == ["new_class"]
    full, test = feature_set(120, 0, excluded=None), feature_set(40, 1, excluded=None)
    result = search(full, test, small_cfg(policies=["new_class"], n_candidates=2), tmp_path, threads=1)
    assert result.policy == "override"


@pytest.mark.parametrize("dims, used", [(2, 2), ([None, 3], None)])
def test_compact_embeddings_are_recorded_and_reapplied(tmp_path, dims, used):
    correct, test = feature_set(240, 0), feature_set(120, 1)
    result = search(correct, test, small_cfg(n_candidates=4, pca_dims=dims, tune_taps=False), tmp_path, threads=1)
    if isinstance(dims, int):
        assert result.pca_dims == used and (tmp_path / "projection.npz").is_file()
    else:  # the search chose; whatever it chose is what winner.json and the saved files say
        assert result.pca_dims in (None, 3) and (tmp_path / "projection.npz").is_file() == (result.pca_dims == 3)
    assert json.loads((tmp_path / "winner.json").read_text())["pca_dims"] == result.pca_dims
    assert np.allclose(predict_proba(tmp_path, test), result.proba, atol=1e-6)  # the saved corrector reapplied


def test_projection_is_fitted_on_correct_only():
    from correctsweep.projection import Projection

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)) * np.arange(1, 11) + 5
    X[:, 4] = np.nan  # a never-trained logit column is dropped, not propagated
    p = Projection.fit(X, 3)
    Z = p.transform(X)
    assert Z.shape == (300, 3) and not np.isnan(Z).any()
    assert np.allclose(Z.mean(0), 0, atol=1e-5) and np.allclose(Z.std(0, ddof=1), 1, atol=1e-3)  # whitened
    shifted = p.transform(X + 100)  # another split is projected on the same basis, not refitted
    assert not np.allclose(shifted.mean(0), 0, atol=1e-3)


def test_timeout_spans_reruns(tmp_path):
    correct, test = feature_set(150, 0), feature_set(60, 1)
    cfg = small_cfg(n_candidates=1000, timeout_s=0.5, tune_taps=False)
    first = search(correct, test, cfg, tmp_path, threads=1)
    assert 1 <= first.n_candidates < 1000 and first.taps == ["fc", "softmax", "noise"]
    calls = []
    again = search(correct, test, cfg, tmp_path, threads=1, on_candidate=calls.append)
    assert calls == [] and again.n_candidates == first.n_candidates  # the budget is spent: loaded


def test_a_record_of_another_version_is_refused_in_one_line_and_the_search_refits(tmp_path, capsys):
    correct, test = feature_set(150, 0), feature_set(60, 1)
    result = search(correct, test, small_cfg(n_candidates=2), tmp_path, threads=1)
    older = json.loads((tmp_path / "winner.json").read_text())
    del older["classes"], older["refit_seconds"]  # as a version before they were recorded wrote it
    (tmp_path / "winner.json").write_text(json.dumps(older | {"xgb_params": older.pop("params")}))
    with pytest.raises(CorrectsweepError) as refused:
        load_result(tmp_path)
    assert "winner.json is unreadable as this version's corrector record" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    capsys.readouterr()
    again = search(correct, test, small_cfg(n_candidates=2), tmp_path, threads=1)
    assert "refitting the search's winner" in capsys.readouterr().out
    assert again.record() == load_result(tmp_path).record() and again.tau == result.tau
