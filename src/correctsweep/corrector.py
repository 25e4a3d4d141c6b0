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
  RUNNING by a killed process, or by Ctrl-C, as FAIL (re-enqueueing their parameters once) and runs only
  the missing trials; the sampler is reseeded by the number of finished candidates before each one, so
  a resumed search proposes what an uninterrupted one would. A journal whose last record a kill cut
  short, or whose record in the middle is damaged, is cut back to its last whole record before the
  damage first. The search's seconds are kept in the study, so timeout_s bounds all runs together.
* Outputs are written atomically, and best.json, written last, records the SHA-256 of every other
  output (`verified`). A rerun of a finished search loads them when they verify, and refits the winner
  when one is missing, cut short or replaced: nothing is reused, reapplied or published unverified.
* The candidates run in our own ask/tell loop rather than study.optimize: Ctrl-C then leaves one
  line (the CLI's) instead of Optuna's traceback of the interrupted trial, and the budget can be
  checked against the trials other workers are running.
* Workers (corrector.workers > 1): N Optuna workers share the study's journal, Ray tasks inside a Ray
  sweep and spawned processes otherwise (see `workers`). JournalFileBackend serialises their appends
  with its lock file; a second lock (ask.lock) makes "check the budget, then ask" one step, so exactly
  n_candidates candidates finish across workers. Each worker records host:pid in its trial
  (user attribute `worker`): the parent, polling the journal every second, marks a RUNNING trial whose
  worker has died FAIL, re-enqueues its parameters once, and starts a replacement worker (each slot is
  replaced at most once per run). Optuna's heartbeats would do this, but they are RDBStorage's only.
  timeout_s bounds the search's wall seconds, not the workers' summed seconds: no worker starts a
  candidate after the deadline, and `search_seconds` is the parent's wall clock from launching the
  workers to the last one ending. Workers sample with TPE's constant liar and seeds apart, so siblings
  do not propose one candidate twice; which worker finishes first is up to the machine, so the search
  is no longer reproducible. The parent reports the candidates and refits the winner once, after all
  workers end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from optuna.trial import FrozenTrial, TrialState

from correctsweep.atomic import atomic_path, write_json
from correctsweep.config import CorrectorConfig
from correctsweep.data import class_indices
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet
from correctsweep.hashing import sha256
from correctsweep.kinds import Kind, Model, SearchSetup, corrector_inputs, fit_projection
from correctsweep.plugins import KINDS
from correctsweep.policy import Labels, apply_policy, best_choice, policies_for
from correctsweep.projection import Projection
from correctsweep.workers import ProcessWorkers, RayWorkers

STUDY_NAME = "corrector"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOT_SEED_STRIDE = 1_000_000  # sampler seeds of sibling workers lie this far apart: more than any search's candidates
POLL_S = 1.0  # how often the parent of several workers reads the journal (reports, dead workers)
_log = optuna.logging.get_logger("optuna.correctsweep")  # beside Optuna's lines, under its verbosity


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


def stratified_cv_splits(y, k, seed, classes) -> list[np.ndarray]:
    """The rows each of k stratified CV splits inside `correct` holds out."""
    counts = np.bincount(y, minlength=len(classes))
    for c, n in zip(classes, counts):
        if n < k:
            raise CorrectsweepError(f"class {c} has {n} sample(s) in the correct split, fewer than "
                                    f"corrector.cv_splits={k}; lower cv_splits or enlarge data.correct_fraction")
    rng = np.random.default_rng(seed)
    split = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(y == c))
        split[rows] = (start + np.arange(len(rows))) % k  # rotate so small classes don't pile on split 0
        start += len(rows)
    return [np.flatnonzero(split == i) for i in range(k)]


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


def _load_study(workdir: Path) -> optuna.Study:
    return optuna.create_study(study_name=STUDY_NAME, storage=study_storage(workdir), direction="maximize",
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=5), load_if_exists=True)


def _open_study(workdir: Path, seed: int) -> optuna.Study:
    if repair_journal(Path(workdir) / "study.journal"):
        print(f"{workdir}/study.journal had a record cut by a kill or damaged: cut it back to the whole records "
              "before it, the search reruns what they lacked", flush=True)
    study = _load_study(workdir)
    # One workdir has one search at a time, whose workers start after this: a RUNNING trial belongs to a
    # killed or interrupted one.
    _retry(study, lambda t: True)
    if "sampler_seed" not in study.user_attrs:
        study.set_user_attr("sampler_seed", seed)
    return study


def _retry(study: optuna.Study, stale: Callable[[FrozenTrial], bool]) -> None:
    """Mark the RUNNING trials that no live worker runs FAIL, and re-enqueue their parameters once."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if stale(t):
            study.tell(t.number, state=TrialState.FAIL)
            if "fixed_params" not in t.system_attrs:  # a re-enqueued trial that died again is dropped
                study.enqueue_trial(t.params)


def _worker_died(trial: FrozenTrial) -> bool:
    """Whether the worker running `trial` (host:pid, on this host) has died. Every worker of a search
    runs on the parent's host (see `workers`), so a trial of another host is not this search's."""
    host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        pass
    return False


def _sampler(study: optuna.Study, slot: int = 0, parallel: bool = False) -> optuna.samplers.TPESampler:
    """A sampler seeded by the number of finished candidates, renewed before each: a search killed and
    resumed then proposes exactly what an uninterrupted one would (a killed trial is FAIL and counts
    for nothing), and a rerun never replays the first run's random start-up candidates. A worker among
    several (`parallel`) seeds its own sequence (`slot`) and counts its siblings' running candidates as
    bad ones (constant liar), so two workers do not propose the same candidate."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    seed = study.user_attrs["sampler_seed"] + finished + slot * SLOT_SEED_STRIDE
    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)


def _setup(correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig, threads: int, taps) -> SearchSetup:
    classes = [int(c) for c in correct.meta["classes"]]
    excluded = correct.meta.get("excluded")
    y = class_indices(correct.labels, classes, "the correct split's features; re-extract them")
    return SearchSetup(correct, y, stratified_cv_splits(y, cfg.cv_splits, cfg.seed, classes), classes, excluded,
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
        labels = Labels(correct.labels[seen], correct.pred_f[seen], setup.classes, setup.excluded)
        tau, score, policy = best_choice(proba[seen], labels, setup.policies, cfg)
        trial.report(score, step)
        if step < len(setup.cv_splits) - 1 and trial.should_prune():
            raise optuna.TrialPruned()
    for key, value in kind.finish(infos).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("tau", tau)
    trial.set_user_attr("policy", policy)
    return score


def _report(study: optuna.Study, trial: FrozenTrial, on_candidate: Callable[[dict], None] | None) -> None:
    if on_candidate is not None and trial.state in FINISHED:
        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        on_candidate({"candidate": trial.number, "state": trial.state.name.lower(),
                      "score": trial.value if trial.value is not None else math.nan,
                      "best": max(values, default=math.nan), "seconds": trial.duration.total_seconds()})


def _candidates_left(study: optuna.Study, cfg: CorrectorConfig) -> int:
    """Candidates no worker has finished or is running yet."""
    return cfg.n_candidates - len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's own line for a finished trial (study.optimize's, which this loop replaces)."""
    if not _log.isEnabledFor(logging.INFO):
        return
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        _log.info(f"Trial {trial.number} finished with value: {trial.value} and parameters: {trial.params}. "
                  f"Best is trial {best.number} with value: {best.value}.")
    elif trial.state == TrialState.PRUNED:
        _log.info(f"Trial {trial.number} pruned.")


def _candidate_loop(study: optuna.Study, setup: SearchSetup, kind: Kind, deadline: float,
                    after: Callable[[FrozenTrial], None] = lambda trial: None, slot: int = 0,
                    ask_lock: ContextManager | None = None) -> None:
    """Run candidates until n_candidates are finished or running (across workers) or the wall clock
    passes `deadline`. A candidate stopped by Ctrl-C stays RUNNING, for the next search to retry."""
    parallel = setup.cfg.workers > 1
    while time.time() < deadline:
        with ask_lock or contextlib.nullcontext():
            if _candidates_left(study, setup.cfg) <= 0:
                return
            study.sampler = _sampler(study, slot, parallel)
            trial = study.ask()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            frozen = study.tell(trial, evaluate(trial, setup, kind))
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=TrialState.FAIL)
            raise
        _log_trial(study, frozen)
        after(frozen)


def _run_candidates(study: optuna.Study, setup: SearchSetup, kind: Kind, workdir: Path, on_candidate) -> float:
    """Run the candidates the budget still allows; returns the search's seconds over all runs."""
    cfg = setup.cfg
    spent = study.user_attrs.get("search_seconds", 0.0)
    budget_left = math.inf if cfg.timeout_s is None else cfg.timeout_s - spent
    if _candidates_left(study, cfg) <= 0 or budget_left <= 0:
        return spent
    started = time.perf_counter()

    def seconds() -> float:  # the search's wall seconds over all runs, kept in the study after each candidate
        study.set_user_attr("search_seconds", spent + time.perf_counter() - started)
        return spent + time.perf_counter() - started

    if cfg.workers == 1:
        _candidate_loop(study, setup, kind, time.time() + budget_left,
                        after=lambda trial: (seconds(), _report(study, trial, on_candidate)))
    else:
        _run_workers(study, setup, workdir, time.time() + budget_left, seconds, on_candidate)
    return seconds()


@dataclass
class WorkerJob:
    """What one of several workers of a search is given."""

    setup: SearchSetup
    """The search's, with this worker's share of the threads."""
    workdir: Path
    deadline: float
    """time.time() after which the worker starts no candidate."""
    slot: int
    """Which worker (0..workers-1): seeds its sampler apart from its siblings'."""
    verbosity: int
    """The parent's Optuna log level (a sweep quiets the per-candidate lines)."""


def worker_threads(cfg: CorrectorConfig, threads: int) -> int:
    """Each worker's share of the search's threads (corrector.threads or the trial's CPUs)."""
    return max(1, (cfg.threads or threads) // cfg.workers)


def core_warning(cfg: CorrectorConfig, threads: int) -> str | None:
    """A line when the workers' threads outnumber this machine's cores (they then share cores)."""
    wanted, cores = cfg.workers * worker_threads(cfg, threads), os.cpu_count() or 1
    if cfg.workers > 1 and wanted > cores:
        return (f"corrector.workers={cfg.workers} x {worker_threads(cfg, threads)} thread(s) each wants {wanted} "
                f"cores and this machine has {cores}: the workers will share them")
    return None


def _work(job: WorkerJob) -> None:
    """One worker: candidates of the shared study until the budget is spent (run in a process or task)."""
    from threadpoolctl import threadpool_limits

    optuna.logging.set_verbosity(job.verbosity)
    threadpool_limits(job.setup.threads)  # the linear kinds' BLAS, as XGBoost's nthread
    # a worker killed holding ask.lock holds up its siblings for the grace period, then they take it
    lock = optuna.storages.journal.JournalFileOpenLock(str(job.workdir / "ask"), grace_period=10)
    _candidate_loop(_load_study(job.workdir), job.setup, KINDS.get(job.setup.cfg.kind)(job.setup), job.deadline,
                    slot=job.slot, ask_lock=_held(lock))


class _held:
    """A journal file lock as a context manager, reusable: held inside each `with`."""

    def __init__(self, lock: optuna.storages.journal.JournalFileOpenLock):
        self.lock = lock

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _in_ray() -> bool:
    """Inside a Ray sweep's trial (without importing Ray, which a plain trial does not need)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _run_workers(study: optuna.Study, setup: SearchSetup, workdir: Path, deadline: float,
                 seconds: Callable[[], float], on_candidate) -> None:
    """Run cfg.workers workers on the study until its budget is spent, replacing a worker that dies
    (once per slot), and report each candidate they finish."""
    cfg = setup.cfg
    share = dataclasses.replace(setup, threads=worker_threads(cfg, setup.threads))
    pool = RayWorkers(_work, share.threads) if _in_ray() else ProcessWorkers(_work)
    reported = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    starts = dict.fromkeys(range(cfg.workers), 0)
    try:
        while True:
            _retry(study, _worker_died)
            idle = [slot for slot in starts if slot not in pool.running]
            wanted = _candidates_left(study, cfg) if time.time() < deadline else 0
            for slot in idle[:max(0, wanted)]:
                if starts[slot] < 2:  # a first start, and one replacement
                    pool.start(slot, WorkerJob(share, workdir, deadline, slot, optuna.logging.get_verbosity()))
                    starts[slot] += 1
            if not pool.running:
                if wanted > 0:
                    raise CorrectsweepError(f"the corrector search's workers in {workdir} kept dying (each was "
                                            "replaced once); rerun to continue, or set corrector.workers=1")
                return
            pool.wait(POLL_S)
            new = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.number not in reported]
            if new:
                seconds()
            for t in sorted(new, key=lambda t: t.number):
                reported.add(t.number)
                _report(study, t, on_candidate)
    except BaseException:
        pool.stop()  # Ctrl-C or a worker's error: no worker searches on alone
        raise


def _finished(study: optuna.Study, cfg: CorrectorConfig) -> bool:
    spent = study.user_attrs.get("search_seconds", 0.0)
    return (len(study.get_trials(deepcopy=False, states=FINISHED)) >= cfg.n_candidates
            or (cfg.timeout_s is not None and spent >= cfg.timeout_s))


def search(correct: FeatureSet, test: FeatureSet, cfg: CorrectorConfig, workdir: Path, threads: int,
           on_candidate: Callable[[dict], None] | None = None, taps: list[str] | None = None) -> CorrectorResult:
    """Tune a corrector of kind cfg.kind, refit it on all of `correct`, predict `test` once. `taps`:
    candidates (default: all in `correct`). A rerun of a finished search loads its saved result."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup = _setup(correct, test, cfg, threads, taps)
    kind = KINDS.get(cfg.kind)(setup)
    study = _open_study(workdir, cfg.seed)
    if _finished(study, cfg) and (workdir / "best.json").exists():
        try:
            return load_result(workdir)
        except CorrectsweepError as e:
            print(f"{e}: refitting the search's winner", flush=True)
    _remove_outputs(workdir, cfg.kind)  # what is there did not verify (or the search is unfinished): rewritten below
    spent = _run_candidates(study, setup, kind, workdir, on_candidate)
    done = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == TrialState.COMPLETE for t in done):
        raise CorrectsweepError("the corrector search finished no candidate; raise corrector.timeout_s "
                                "or corrector.n_candidates")
    best = study.best_trial
    params = best.user_attrs.get("params", best.user_attrs.get("xgb_params"))  # journals from before kinds
    attrs = best.user_attrs | {"params": params | kind.fixed}  # this machine's device, threads
    started = time.perf_counter()
    projection = fit_projection(correct, attrs["taps"], attrs.get("pca_dims"), cfg.seed)
    model = kind.refit(*corrector_inputs(correct, attrs["taps"], projection), attrs)
    proba = model.predict_proba(corrector_inputs(test, attrs["taps"], projection)[0])
    result = CorrectorResult(
        params=attrs["params"], taps=attrs["taps"], policy=attrs["policy"], tau=attrs["tau"],
        n_rounds=attrs.get("n_rounds"), cv_score=best.value,
        pred_h=apply_policy(proba, test.pred_f, setup.classes, attrs["policy"], attrs["tau"], setup.excluded),
        proba=proba, search_seconds=spent, seconds_per_candidate=spent / len(done), n_candidates=len(done),
        pca_dims=projection.dims if projection else None, kind=cfg.kind,
        refit_seconds=time.perf_counter() - started)
    _save(workdir, result, model, projection, test, setup.classes, cfg.objective)
    return result


def predict_proba(workdir: Path, fs: FeatureSet) -> np.ndarray:
    """A saved corrector's class probabilities (columns in its classes' order) on any feature set
    with the taps it chose: the model and, when it saw compact embeddings, their basis, reloaded once
    their checksums verify."""
    workdir = Path(workdir)
    best = verified(workdir, predictions=False)  # best/ publishes a corrector without its test predictions
    model = KINDS.get(best["kind"]).load(workdir)
    projection = Projection.load(workdir / "projection.npz") if best.get("pca_dims") else None
    return model.predict_proba(corrector_inputs(fs, _check_taps(fs, fs, best["taps"]), projection)[0])


def output_files(kind: str, pca_dims: int | None) -> list[str]:
    """The files a search writes beside best.json, whose checksums best.json records."""
    return ["predictions.parquet", KINDS.get(kind).model_file] + (["projection.npz"] if pca_dims else [])


def _remove_outputs(workdir: Path, kind: str) -> None:
    """Remove a search's outputs (best.json first: without it nothing else is read), files or not. The
    workdir is keyed by the kind's settings, so only its kind's files can be there."""
    for name in ["best.json", *output_files(kind, 1)]:
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
        names = output_files(best["kind"], best.get("pca_dims"))[0 if predictions else 1:]
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
