"""The corrector g (a model of the classes on the base net's latent features) and its Optuna search.

g is trained with the true labels of the `correct` split on the taps e(x); the policies and the
threshold tau that turn g's probabilities into the corrected h are in `policy` (SPEC §1). g is of one
kind (corrector.kind: xgboost, fisher or logistic; see `kinds`), and this module searches, refits,
saves and reloads every kind the same way.

Design choices
* A candidate (one Optuna trial) is the kind's hyperparameters plus a tap subset, and the principal
  components the kind sees, scored by stratified k-fold CV inside `correct`. A MedianPruner drops a
  candidate whose objective on the out-of-fold rows seen so far falls below the median of earlier
  candidates after as many folds; one choosing no tap is pruned at once (it costs a trial number, not
  time). How a kind makes its candidates cheap is in its module (xgboost: quantised CV matrices per tap
  subset, early stopping).
* tau costs no trials: each candidate's out-of-fold probabilities are scored at every grid threshold
  for every allowed policy and the best (tau, policy) is kept as trial user attributes. Ties go to
  the largest tau: of equally good corrections, the one that changes f least.
* Resume: the study lives in an Optuna journal file in the workdir. A rerun marks trials left
  RUNNING by a killed process as FAIL (re-enqueueing their parameters once) and runs only the
  missing trials; the sampler is reseeded by the number of finished candidates before each one, so
  a resumed search proposes what an uninterrupted one would. A journal whose last record a kill cut
  short, or whose record in the middle is damaged, is cut back to its last whole record before the
  damage first. The search's seconds are kept in the study, so timeout_s bounds all runs together.
* Outputs are written atomically, and best.json, written last, records the SHA-256 of every other
  output (`verified`). A rerun of a finished search loads them when they verify, and refits the winner
  when one is missing, cut short or replaced: nothing is reused, reapplied or published unverified.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from optuna.trial import TrialState

from correctsweep.atomic import atomic_path, write_json
from correctsweep.config import CorrectorConfig
from correctsweep.data import class_indices
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet
from correctsweep.kinds import KINDS, Kind, Model
from correctsweep.policy import apply_policy, best_choice, policies_for
from correctsweep.projection import Projection

STUDY_NAME = "corrector"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class CorrectorResult:
    """The winner of a search and its one evaluation on `test`; also what best.json and
    predictions.parquet hold."""

    params: dict
    """The winner's hyperparameters (xgboost: the booster's, with this machine's device and threads)."""
    taps: list[str]
    policy: str
    tau: float
    n_rounds: int | None
    """xgboost: the refit's boosting rounds; None for the other kinds."""
    cv_score: float
    pred_h: np.ndarray
    proba: np.ndarray
    search_seconds: float
    seconds_per_candidate: float
    n_candidates: int
    pca_dims: int | None = None
    """Whitened principal components the winner saw (projection.npz beside it), or None: full width."""
    kind: str = "xgboost"
    """The corrector kind (a best.json from before kinds existed is xgboost's)."""
    refit_seconds: float = math.nan
    """Seconds to refit the winner on all of `correct` and predict `test` (NaN in older results)."""


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


def _suggest_taps(trial: optuna.Trial, taps: list[str], cfg: CorrectorConfig) -> list[str]:
    return [t for t in taps if trial.suggest_categorical(f"tap.{t}", [True, False])] if cfg.tune_taps else taps


def study_storage(workdir: Path) -> optuna.storages.JournalStorage:
    """The Optuna storage of the search in `workdir` (created on first use)."""
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(workdir) / "study.journal")))


def damaged_record(path: Path) -> int | None:
    """The line number of the first record of a journal that does not parse, when a whole record
    follows it (Optuna skips a torn last line, but stops with an error at one in the middle); else None."""
    lines = Path(path).read_bytes().splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError:
            return number if number < len(lines) or line.endswith(b"\n") else None
    return None


def repair_journal(path: Path) -> bool:
    """Cut a journal back to its last whole record before the first that does not parse; returns
    whether it had to. Optuna appends one JSON line per operation: a kill can leave the last line
    half-written, and a damaged disk or copy can break one in the middle, after which Optuna cannot
    read the journal at all. Every prefix of whole records is a state the study was in, so the search
    resumes from there and reruns the candidates whose records were cut."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    keep = 0
    for line in data.splitlines(keepends=True):
        try:
            json.loads(line)
        except ValueError:
            break
        if not line.endswith(b"\n"):
            break
        keep += len(line)
    if keep == len(data):
        return False
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    return True


def _open_study(workdir: Path, seed: int) -> optuna.Study:
    if repair_journal(Path(workdir) / "study.journal"):
        print(f"{workdir}/study.journal had a record cut by a kill or damaged: cut it back to the whole records "
              "before it, the search reruns what they lacked", flush=True)
    study = optuna.create_study(study_name=STUDY_NAME, storage=study_storage(workdir), direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
                                load_if_exists=True)
    # One workdir has one searcher at a time, so a RUNNING trial belongs to a killed process.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        if "fixed_params" not in t.system_attrs:  # a re-enqueued trial that died again is dropped
            study.enqueue_trial(t.params)
    if "sampler_seed" not in study.user_attrs:
        study.set_user_attr("sampler_seed", seed)
    study.sampler = _sampler(study)
    return study


def _sampler(study: optuna.Study) -> optuna.samplers.TPESampler:
    """A sampler seeded by the number of finished candidates, renewed after each: a search killed and
    resumed then proposes exactly what an uninterrupted one would (a killed trial is FAIL and counts
    for nothing), and a rerun never replays the first run's random start-up candidates."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    return optuna.samplers.TPESampler(seed=study.user_attrs["sampler_seed"] + finished)


@dataclass
class SearchSetup:
    """What every candidate of one search shares: the `correct` split, its CV splits and the allowed
    policies."""

    correct: FeatureSet
    y: np.ndarray
    """class indices 0..K-1 of correct.labels."""
    cv_splits: list[np.ndarray]
    classes: list[int]
    excluded: int | None
    policies: list[str]
    taps: list[str]
    """the taps the search may choose among."""
    cfg: CorrectorConfig
    threads: int
    """the trial's CPUs."""

    def train_rows(self, valid: np.ndarray) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.y)), valid)

    def inputs(self, taps: tuple[str, ...], dims: int | None) -> tuple[np.ndarray, list[str]]:
        """`correct` as a candidate sees it: the stacked taps, or their projection (fitted on all of
        `correct`: the basis is unsupervised, so CV inside `correct` leaks no label)."""
        return _inputs(self.correct, taps, _projection(self.correct, taps, dims, self.cfg.seed))


def _setup(correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig, threads: int, taps) -> SearchSetup:
    classes = [int(c) for c in correct.meta["classes"]]
    excluded = correct.meta.get("excluded")
    y = class_indices(correct.labels, classes, "the correct split's features; re-extract them")
    return SearchSetup(correct, y, _stratified_folds(y, cfg.cv_folds, cfg.seed, classes), classes, excluded,
                       policies_for(cfg.policies, excluded), _check_taps(correct, test, taps), cfg, threads)


def evaluate(trial: optuna.Trial, setup: SearchSetup, kind: Kind) -> float:
    """One candidate: its cross-validated objective, with the best (tau, policy) on its out-of-fold
    probabilities kept as user attributes. Pruned when it trails the median of earlier candidates
    after as many CV splits, or when it chose no tap (costs a trial number, not time)."""
    cfg, correct = setup.cfg, setup.correct
    params = kind.suggest(trial) | kind.fixed
    chosen = _suggest_taps(trial, setup.taps, cfg)
    dims = kind.suggest_dims(trial)
    if not chosen:
        raise optuna.TrialPruned("no tap chosen")
    trial.set_user_attr("params", params)
    trial.set_user_attr("taps", chosen)
    trial.set_user_attr("pca_dims", dims)
    proba, seen, infos = np.zeros((len(setup.y), len(setup.classes))), np.empty(0, dtype=np.int64), []
    for step, (valid, valid_proba, info) in enumerate(kind.cv(params, tuple(chosen), dims)):
        proba[valid], seen = valid_proba, np.concatenate([seen, valid])
        infos.append(info)
        tau, score, policy = best_choice(proba[seen], correct.labels[seen], correct.pred_f[seen],
                                         setup.classes, setup.policies, setup.excluded, cfg)
        trial.report(score, step)
        if step < len(setup.cv_splits) - 1 and trial.should_prune():
            raise optuna.TrialPruned()
    for key, value in kind.finish(infos).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("tau", tau)
    trial.set_user_attr("policy", policy)
    return score


def _progress(spent: float, started: float, on_trial: Callable[[dict], None] | None):
    """An Optuna callback: keeps the search's seconds in the study (so timeout_s bounds all runs
    together) and reports each finished candidate."""
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        study.set_user_attr("search_seconds", spent + time.perf_counter() - started)
        study.sampler = _sampler(study)
        if on_trial is not None and trial.state in FINISHED:
            values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            on_trial({"trial": trial.number, "state": trial.state.name.lower(),
                      "score": trial.value if trial.value is not None else math.nan,
                      "best": max(values, default=math.nan), "seconds": trial.duration.total_seconds()})
    return callback


def _run_candidates(study: optuna.Study, setup: SearchSetup, kind: Kind, on_trial) -> float:
    """Run the candidates the budget still allows; returns the search's seconds over all runs."""
    cfg = setup.cfg
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    spent = study.user_attrs.get("search_seconds", 0.0)
    budget_left = math.inf if cfg.timeout_s is None else cfg.timeout_s - spent
    if done >= cfg.n_trials or budget_left <= 0:
        return spent
    started = time.perf_counter()
    study.optimize(lambda t: evaluate(t, setup, kind), n_trials=cfg.n_trials - done,
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
    """Tune a corrector of kind cfg.kind, refit it on all of `correct`, predict `test` once. `taps`:
    candidates (default: all in `correct`). A rerun of a finished search loads its saved result."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup = _setup(correct, test, cfg, threads, taps)
    kind = KINDS[cfg.kind](setup)
    study = _open_study(workdir, cfg.seed)
    if _finished(study, cfg) and (workdir / "best.json").exists():
        try:
            return load_result(workdir)
        except CorrectsweepError as e:
            print(f"{e}: refitting the search's winner", flush=True)
    _remove_outputs(workdir)  # whatever is there did not verify (or the search is unfinished): rewritten below
    spent = _run_candidates(study, setup, kind, on_trial)
    done = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == TrialState.COMPLETE for t in done):
        raise CorrectsweepError("the corrector search finished no candidate; raise corrector.timeout_s "
                                "or corrector.n_trials")
    best = study.best_trial
    params = best.user_attrs.get("params", best.user_attrs.get("xgb_params"))  # journals from before kinds
    attrs = best.user_attrs | {"params": params | kind.fixed}  # this machine's device, threads
    started = time.perf_counter()
    projection = _projection(correct, attrs["taps"], attrs.get("pca_dims"), cfg.seed)
    model = kind.refit(*_inputs(correct, attrs["taps"], projection), attrs)
    proba = model.predict_proba(_inputs(test, attrs["taps"], projection)[0])
    result = CorrectorResult(
        params=attrs["params"], taps=attrs["taps"], policy=attrs["policy"], tau=attrs["tau"],
        n_rounds=attrs.get("n_rounds"), cv_score=best.value,
        pred_h=apply_policy(proba, test.pred_f, setup.classes, attrs["policy"], attrs["tau"], setup.excluded),
        proba=proba, search_seconds=spent, seconds_per_candidate=spent / len(done), n_candidates=len(done),
        pca_dims=projection.dims if projection else None, kind=cfg.kind,
        refit_seconds=time.perf_counter() - started)
    _save(workdir, result, model, projection, test, setup.classes, cfg.objective)
    return result


def _projection(fs: FeatureSet, taps, dims: int | None, seed: int) -> Projection | None:
    """The whitened basis of `dims` components fitted on `fs` (`correct`), or None: the plain taps."""
    return Projection.fit(_stack(fs, taps)[0], dims, seed) if dims else None


def _inputs(fs: FeatureSet, taps, projection: Projection | None) -> tuple[np.ndarray, list[str]]:
    """What the corrector sees of `fs`: the stacked taps, or their projection."""
    X, names = _stack(fs, taps)
    return (projection.transform(X), projection.names()) if projection else (X, names)


def predict_proba(workdir: Path, fs: FeatureSet) -> np.ndarray:
    """A saved corrector's class probabilities (columns in its classes' order) on any feature set
    with the taps it chose: the model and, when it saw compact embeddings, their basis, reloaded once
    their checksums verify."""
    workdir = Path(workdir)
    best = verified(workdir, predictions=False)  # best/ publishes a corrector without its test predictions
    model = KINDS[best.get("kind", "xgboost")].load(workdir)  # a best.json from before kinds is xgboost's
    projection = Projection.load(workdir / "projection.npz") if best.get("pca_dims") else None
    return model.predict_proba(_inputs(fs, _check_taps(fs, fs, best["taps"]), projection)[0])


def output_files(kind: str, pca_dims: int | None) -> list[str]:
    """The files a search writes beside best.json, whose checksums best.json records."""
    return ["predictions.parquet", KINDS[kind].model_file] + (["projection.npz"] if pca_dims else [])


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _remove_outputs(workdir: Path) -> None:
    """Remove a search's outputs (best.json first: without it nothing else is read), files or not."""
    for name in ["best.json", *{f for kind in KINDS for f in output_files(kind, 1)}]:
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _save(workdir: Path, result: CorrectorResult, model: Model, projection: Projection | None,
          test: FeatureSet, classes, objective: str) -> None:
    model.save(workdir)
    if projection:
        projection.save(workdir / "projection.npz")
    columns = {"sample_id": test.sample_ids.astype(str), "label": test.labels, "pred_f": test.pred_f,
               "pred_h": result.pred_h.astype(np.int64)}
    columns |= {f"p_{c}": result.proba[:, i].astype(np.float32) for i, c in enumerate(classes)}
    with atomic_path(workdir / "predictions.parquet") as tmp:
        pq.write_table(pa.table(columns), tmp)
    # best.json last: its presence says the other files are complete, and its checksums that they are these
    best = {k: v for k, v in asdict(result).items() if k not in ("pred_h", "proba")}
    files = {name: sha256(workdir / name) for name in output_files(result.kind, result.pca_dims)}
    write_json(workdir / "best.json", best | {"objective": objective, "classes": classes, "sha256": files})


def verified(workdir: Path, predictions: bool = True) -> dict:
    """best.json of a finished search, once every output it names (the test predictions aside unless
    `predictions`) matches the checksum it recorded; else a CorrectsweepError naming the file that does not."""
    workdir = Path(workdir)
    try:
        best = json.loads((workdir / "best.json").read_text())
        files = best["sha256"]
        names = output_files(best.get("kind", "xgboost"), best.get("pca_dims"))[0 if predictions else 1:]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        problem = "has no checksums (written before they were recorded)" if isinstance(e, KeyError) else \
            f"is unreadable ({str(e).splitlines()[0][:60]})"
        raise CorrectsweepError(f"corrector output {workdir / 'best.json'} {problem}") from None
    for name in names:
        path = workdir / name
        if not path.is_file():
            raise CorrectsweepError(f"corrector output {path} is missing")
        if files.get(name) != sha256(path):
            raise CorrectsweepError(f"corrector output {path} does not match the checksum best.json recorded "
                                    "(cut short or replaced)")
    return best


def load_result(workdir: Path) -> CorrectorResult:
    """The result a finished `search` wrote into `workdir`, once its outputs verify."""
    best = verified(workdir)
    try:
        table = pd.read_parquet(Path(workdir) / "predictions.parquet")
        stored = {f.name: best[f.name] for f in fields(CorrectorResult) if f.name in best}
        return CorrectorResult(**stored, pred_h=table["pred_h"].to_numpy(),
                               proba=table[[f"p_{c}" for c in best["classes"]]].to_numpy())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorrectsweepError(f"corrector output {workdir} does not read back ({str(e).splitlines()[0][:60]})"
                                ) from None
