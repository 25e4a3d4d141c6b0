"""The corrector g (XGBoost on the base net's latent features) and its Optuna search.

g is trained with the true labels of the `correct` split on the taps e(x); the policies and the
threshold tau that turn g's probabilities into the corrected h are in `policy` (SPEC §1).

Design choices
* The search dominates a sweep's time, so each candidate (one Optuna trial: XGBoost parameters plus a
  tap subset, scored by stratified k-fold CV inside `correct`) is made cheap. The CV splits are
  quantised into QuantileDMatrix pairs (train, and valid with ref=train) once per tap subset and
  reused by every candidate asking for that subset; boosting stops early on the held-out fold's
  mlogloss; and a MedianPruner drops a candidate whose objective on the out-of-fold rows seen so far
  falls below the median of earlier candidates after as many folds.
* Tap selection builds matrices per subset (lazily, a small LRU cache) rather than masking columns
  of one all-taps matrix: XGBoost cannot drop columns of a built matrix, `feature_weights` only bias
  column sampling (a zero weight is clamped to 1e-6, and ignored when colsample is 1), and
  `interaction_constraints` leave unlisted features usable (both checked on XGBoost 3.2). Building
  one split's matrices took 0.5 s for 5k rows x 1000 features on 2 threads, against ~0.35 s per
  boosting round, and a narrower matrix also trains faster. A candidate choosing no tap is pruned
  at once (it costs a trial number, not time).
* Bins: MAX_BIN = 64 rather than XGBoost's 256. With many features and small nodes, split search
  over the bins dominates a round: on 2.7k rows x 400 features x 7 classes (1 thread) a round took
  0.08 s against 0.24 s, for the same held-out log-loss (1.169 vs 1.168) and rounds (230 vs 228).
* tau costs no trials: each candidate's out-of-fold probabilities are scored at every grid threshold
  for every allowed policy and the best (tau, policy) is kept as trial user attributes. Ties go to
  the largest tau: of equally good corrections, the one that changes f least.
* Resume: the study lives in an Optuna journal file in the workdir. A rerun marks trials left
  RUNNING by a killed process as FAIL (re-enqueueing their parameters once) and runs only the
  missing trials; the sampler's seed is offset by the number of trials so far so that it does not
  replay the first run's random start-up candidates. The search's seconds are kept in the study, so
  timeout_s bounds all runs together. Outputs are written atomically; a rerun of a finished search loads
  them instead of refitting.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb
from optuna.trial import TrialState

from correctsweep.atomic import atomic_path, write_json
from correctsweep.config import CorrectorConfig
from correctsweep.data import class_indices
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet
from correctsweep.policy import apply_policy, best_choice, policies_for
from correctsweep.projection import Projection
from correctsweep.train import pick_device

STUDY_NAME = "corrector"
CACHED_SUBSETS = 4  # tap subsets whose CV matrices are kept; each holds k (train, valid) pairs
MAX_BIN = 64  # histogram bins per feature, fixed because the matrices are quantised once (see above)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class CorrectorResult:
    """The winner of a search and its one evaluation on `test`; also what best.json and
    predictions.parquet hold."""

    params: dict
    taps: list[str]
    policy: str
    tau: float
    n_rounds: int
    cv_score: float
    pred_h: np.ndarray
    proba: np.ndarray
    search_seconds: float
    seconds_per_candidate: float
    n_candidates: int
    pca_dims: int | None = None
    """Whitened principal components the winner saw (projection.npz beside it), or None: full width."""


def _check_taps(correct: FeatureSet, test: FeatureSet, taps) -> list[str]:
    taps = list(correct.taps) if taps is None else list(taps)
    if not taps:
        raise CorrectsweepError("no taps to feed the corrector; list some in features.taps")
    for split, fs in (("correct", correct), ("test", test)):
        for t in taps:
            if t not in fs.taps:
                raise CorrectsweepError(f"tap '{t}' is not in the {split} features (they have "
                                        f"{', '.join(fs.taps)}); pick from those or add it to features.taps")
    return taps


def _stratified_folds(y, k, seed, classes) -> list[np.ndarray]:
    counts = np.bincount(y, minlength=len(classes))
    for c, n in zip(classes, counts):
        if n < k:
            raise CorrectsweepError(f"class {c} has {n} sample(s) in the correct split, fewer than "
                                    f"corrector.cv_folds={k}; lower cv_folds or enlarge data.correct_fraction")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = (start + np.arange(len(rows))) % k  # rotate so small classes don't pile on fold 0
        start += len(rows)
    return [np.flatnonzero(fold == i) for i in range(k)]


def _stack(fs: FeatureSet, taps) -> tuple[np.ndarray, list[str]]:
    names = [f"{t}.{i}" for t in taps for i in range(fs.taps[t].shape[1])]
    return np.hstack([fs.taps[t] for t in taps]).astype(np.float32, copy=False), names


def _quantise(X, y, names, nthread, ref=None) -> xgb.QuantileDMatrix:
    """Binned features; with `ref`, binned on the reference's cut points (a valid or test part)."""
    return xgb.QuantileDMatrix(X, y, ref=ref, feature_names=names, max_bin=MAX_BIN, nthread=nthread)


def _suggest(trial: optuna.Trial, taps: list[str], cfg: CorrectorConfig) -> tuple[dict, list[str], int | None]:
    params = {
        "eta": trial.suggest_float("eta", 0.03, 0.3, log=True),  # slower ones run out of max_rounds
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
        "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
        "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
    }
    if cfg.tune_taps:
        taps = [t for t in taps if trial.suggest_categorical(f"tap.{t}", [True, False])]
    dims = trial.suggest_categorical("pca_dims", cfg.pca_dims) if isinstance(cfg.pca_dims, list) else cfg.pca_dims
    return params, taps, dims


def study_storage(workdir: Path) -> optuna.storages.JournalStorage:
    """The Optuna storage of the search in `workdir` (created on first use)."""
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(workdir) / "study.journal")))


def _open_study(workdir: Path, seed: int) -> optuna.Study:
    study = optuna.create_study(study_name=STUDY_NAME, storage=study_storage(workdir), direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
                                load_if_exists=True)
    # One workdir has one searcher at a time, so a RUNNING trial belongs to a killed process.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        if "fixed_params" not in t.system_attrs:  # a re-enqueued trial that died again is dropped
            study.enqueue_trial(t.params)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


@dataclass
class SearchSetup:
    """What every candidate of one search shares: the `correct` split encoded for XGBoost, its CV
    splits, the allowed policies and the fixed booster parameters."""

    correct: FeatureSet
    y: np.ndarray
    """class indices 0..K-1 of correct.labels."""
    cv_splits: list[np.ndarray]
    classes: list[int]
    excluded: int | None
    policies: list[str]
    taps: list[str]
    """the taps the search may choose among."""
    fixed: dict
    """booster parameters no candidate changes (objective, device, threads, seed)."""
    cfg: CorrectorConfig

    def __post_init__(self):
        # per (tap subset, pca dims): k (train, valid) matrix pairs, quantised once and reused
        self.cv_matrices = functools.lru_cache(maxsize=CACHED_SUBSETS)(self._cv_matrices)

    def _cv_matrices(self, subset: tuple[str, ...], dims: int | None) -> list:
        X, names = _stack(self.correct, subset)
        if dims:
            projection = Projection.fit(X, dims, self.cfg.seed)
            X, names = projection.transform(X), projection.names()
        out, nthread = [], self.fixed["nthread"]
        for valid in self.cv_splits:
            train = np.setdiff1d(np.arange(len(self.y)), valid)
            dtrain = _quantise(X[train], self.y[train], names, nthread)
            out.append((dtrain, _quantise(X[valid], self.y[valid], names, nthread, ref=dtrain), valid))
        return out


def _setup(correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig, threads: int, taps) -> SearchSetup:
    classes = [int(c) for c in correct.meta["classes"]]
    excluded = correct.meta.get("excluded")
    y = class_indices(correct.labels, classes, "the correct split's features; re-extract them")
    fixed = {"objective": "multi:softprob", "num_class": len(classes), "tree_method": "hist",
             "max_bin": MAX_BIN, "eval_metric": "mlogloss", "device": pick_device(cfg.device, "corrector.device").type,
             "nthread": cfg.threads or threads, "seed": cfg.seed}
    return SearchSetup(correct, y, _stratified_folds(y, cfg.cv_folds, cfg.seed, classes), classes, excluded,
                       policies_for(cfg.policies, excluded), _check_taps(correct, test, taps), fixed, cfg)


def evaluate(trial: optuna.Trial, setup: SearchSetup) -> float:
    """One candidate: its cross-validated objective, with the best (tau, policy) on its out-of-fold
    probabilities kept as user attributes. Pruned when it trails the median of earlier candidates
    after as many CV splits, or when it chose no tap (costs a trial number, not time)."""
    cfg, correct = setup.cfg, setup.correct
    params, chosen, dims = _suggest(trial, setup.taps, cfg)
    if not chosen:
        raise optuna.TrialPruned("no tap chosen")
    params |= setup.fixed
    trial.set_user_attr("xgb_params", params)
    trial.set_user_attr("taps", chosen)
    trial.set_user_attr("pca_dims", dims)
    proba, seen, rounds = np.zeros((len(setup.y), len(setup.classes))), np.empty(0, dtype=np.int64), []
    for step, (dtrain, dvalid, valid) in enumerate(setup.cv_matrices(tuple(chosen), dims)):
        booster = xgb.train(params, dtrain, cfg.max_rounds, evals=[(dvalid, "valid")],
                            early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
        rounds.append(booster.best_iteration + 1)
        proba[valid] = booster.predict(dvalid, iteration_range=(0, rounds[-1]))
        seen = np.concatenate([seen, valid])
        tau, score, policy = best_choice(proba[seen], correct.labels[seen], correct.pred_f[seen],
                                         setup.classes, setup.policies, setup.excluded, cfg)
        trial.report(score, step)
        if step < len(setup.cv_splits) - 1 and trial.should_prune():
            raise optuna.TrialPruned()
    k = len(setup.cv_splits)  # the refit sees k/(k-1) times the rows, so it gets proportionally more rounds
    trial.set_user_attr("n_rounds", min(cfg.max_rounds, max(1, int(round(np.mean(rounds) * k / (k - 1))))))
    trial.set_user_attr("tau", tau)
    trial.set_user_attr("policy", policy)
    return score


def _progress(spent: float, started: float, on_trial: Callable[[dict], None] | None):
    """An Optuna callback: keeps the search's seconds in the study (so timeout_s bounds all runs
    together) and reports each finished candidate."""
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        study.set_user_attr("search_seconds", spent + time.perf_counter() - started)
        if on_trial is not None and trial.state in FINISHED:
            values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            on_trial({"trial": trial.number, "state": trial.state.name.lower(),
                      "score": trial.value if trial.value is not None else math.nan,
                      "best": max(values, default=math.nan), "seconds": trial.duration.total_seconds()})
    return callback


def _run_candidates(study: optuna.Study, setup: SearchSetup, on_trial) -> float:
    """Run the candidates the budget still allows; returns the search's seconds over all runs."""
    cfg = setup.cfg
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    spent = study.user_attrs.get("search_seconds", 0.0)
    budget_left = math.inf if cfg.timeout_s is None else cfg.timeout_s - spent
    if done >= cfg.n_trials or budget_left <= 0:
        return spent
    started = time.perf_counter()
    study.optimize(lambda t: evaluate(t, setup), n_trials=cfg.n_trials - done,
                   timeout=None if math.isinf(budget_left) else budget_left,
                   callbacks=[_progress(spent, started, on_trial)])
    spent += time.perf_counter() - started
    study.set_user_attr("search_seconds", spent)
    return spent


def _finished(study: optuna.Study, cfg: CorrectorConfig) -> bool:
    spent = study.user_attrs.get("search_seconds", 0.0)
    return (len(study.get_trials(deepcopy=False, states=FINISHED)) >= cfg.n_trials
            or (cfg.timeout_s is not None and spent >= cfg.timeout_s))


def search(correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig, workdir: Path, threads: int,
           on_trial: Callable[[dict], None] | None = None, taps: list[str] | None = None) -> CorrectorResult:
    """Tune, refit on all of `correct`, predict `test` once. `taps`: candidates (default: all in `correct`).
    A rerun of a finished search loads its saved result instead of refitting."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup = _setup(correct, test, cfg, threads, taps)
    study = _open_study(workdir, cfg.seed)
    if _finished(study, cfg) and (workdir / "best.json").exists() and (workdir / "predictions.parquet").exists():
        return load_result(workdir)
    spent = _run_candidates(study, setup, on_trial)
    done = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == TrialState.COMPLETE for t in done):
        raise CorrectsweepError("the corrector search finished no candidate; raise corrector.timeout_s "
                                "or corrector.n_trials")
    best = study.best_trial
    attrs, params = best.user_attrs, best.user_attrs["xgb_params"] | setup.fixed  # this machine's device, threads
    dims = attrs.get("pca_dims")
    projection = Projection.fit(_stack(correct, attrs["taps"])[0], dims, cfg.seed) if dims else None
    booster = _refit(correct, setup.y, params, attrs["taps"], attrs["n_rounds"], projection)
    proba = _proba(booster, test, attrs["taps"], projection)
    result = CorrectorResult(
        params=params, taps=attrs["taps"], policy=attrs["policy"], tau=attrs["tau"],
        n_rounds=attrs["n_rounds"], cv_score=best.value,
        pred_h=apply_policy(proba, test.pred_f, setup.classes, attrs["policy"], attrs["tau"], setup.excluded),
        proba=proba, search_seconds=spent, seconds_per_candidate=spent / len(done), n_candidates=len(done),
        pca_dims=projection.dims if projection else None)
    _save(workdir, result, booster, projection, test, setup.classes, cfg.objective)
    return result


def _inputs(fs: FeatureSet, taps, projection: Projection | None) -> tuple[np.ndarray, list[str]]:
    """What the corrector sees of `fs`: the stacked taps, or their projection."""
    X, names = _stack(fs, taps)
    return (projection.transform(X), projection.names()) if projection else (X, names)


def _refit(correct: FeatureSet, y, params: dict, taps, n_rounds: int, projection: Projection | None) -> xgb.Booster:
    """The winner trained on all of `correct`."""
    X, names = _inputs(correct, taps, projection)
    return xgb.train(params, _quantise(X, y, names, params["nthread"]), n_rounds)


def _proba(booster: xgb.Booster, fs: FeatureSet, taps, projection: Projection | None) -> np.ndarray:
    X, names = _inputs(fs, taps, projection)
    return booster.predict(xgb.DMatrix(X, feature_names=names))


def predict_proba(workdir: Path, fs: FeatureSet) -> np.ndarray:
    """A saved corrector's class probabilities (columns in its classes' order) on any feature set
    with the taps it chose: the model and, when it saw compact embeddings, their basis, reloaded."""
    workdir = Path(workdir)
    best = json.loads((workdir / "best.json").read_text())
    booster = xgb.Booster(model_file=str(workdir / "model.ubj"))
    projection = Projection.load(workdir / "projection.npz") if best.get("pca_dims") else None
    return _proba(booster, fs, _check_taps(fs, fs, best["taps"]), projection)


def _save(workdir: Path, result: CorrectorResult, booster: xgb.Booster, projection: Projection | None,
          test: FeatureSet, classes, objective: str) -> None:
    with atomic_path(workdir / "model.ubj") as tmp:
        booster.save_model(tmp)
    if projection:
        projection.save(workdir / "projection.npz")
    columns = {"sample_id": test.sample_ids.astype(str), "label": test.labels, "pred_f": test.pred_f,
               "pred_h": result.pred_h.astype(np.int64)}
    columns |= {f"p_{c}": result.proba[:, i].astype(np.float32) for i, c in enumerate(classes)}
    with atomic_path(workdir / "predictions.parquet") as tmp:
        pq.write_table(pa.table(columns), tmp)
    # best.json last: its presence says the other files are complete
    best = {k: v for k, v in asdict(result).items() if k not in ("pred_h", "proba")}
    write_json(workdir / "best.json", best | {"objective": objective, "classes": classes})


def load_result(workdir: Path) -> CorrectorResult:
    """The result a finished `search` wrote into `workdir`."""
    best = json.loads((Path(workdir) / "best.json").read_text())
    table = pd.read_parquet(Path(workdir) / "predictions.parquet")
    stored = {f.name: best[f.name] for f in fields(CorrectorResult) if f.name in best}
    return CorrectorResult(**stored, pred_h=table["pred_h"].to_numpy(),
                           proba=table[[f"p_{c}" for c in best["classes"]]].to_numpy())
