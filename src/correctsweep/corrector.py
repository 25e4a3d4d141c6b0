"""The corrector g (a model of the classes on the base net's latent features) and its Optuna search.

g is trained with the true labels of the `correct` split on the taps e(x); the policies and the
threshold tau that turn g's probabilities into the corrected h are in `policy` (SPEC §1). g is of one
kind (corrector.kind: xgboost, fisher or logistic; see `kinds`), and this module searches and refits
every kind the same way; `corrector_store` saves and reloads what it chose, `corrector_journal` keeps
the study.

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
* Certified Harm (corrector.max_harm): a stratified calibration part of `correct` is held out before
  anything else; the candidates are cross-validated and the winner refitted on the rest, and the winner's
  tau is then certified on the calibration part (`certify`), whose rows g never saw. Its probabilities
  there are kept beside the test ones in predictions.parquet (column `split`).
* Resume: the study lives in an Optuna journal file in the workdir. A rerun marks trials left
  RUNNING by a killed process, or by Ctrl-C, as FAIL (re-enqueueing their parameters once) and runs only
  the missing trials; the sampler is reseeded by the number of finished candidates before each one, so
  a resumed search proposes what an uninterrupted one would. A journal whose last record a kill cut
  short, or whose record in the middle is damaged, is cut back to its last whole record before the
  damage first. The search's seconds are kept in the study, so timeout_s bounds all runs together.
* Outputs (`corrector_store`) are written atomically, and winner.json, the chosen corrector's record,
  last. A rerun of a finished search loads them when they verify, and refits the winner when one is
  missing, cut short, replaced, or written by another version.
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
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from correctsweep import certify
from correctsweep.config import CorrectorConfig
from correctsweep.corrector_journal import STUDY_NAME, repair_journal, study_storage
from correctsweep.corrector_store import RECORD, CorrectorResult, check_taps, load_result, remove_outputs, save
from correctsweep.data import class_indices
from correctsweep.errors import CorrectsweepError
from correctsweep.features import FeatureSet
from correctsweep.kinds import Kind, SearchSetup, corrector_inputs, fit_projection
from correctsweep.plugins import KINDS
from correctsweep.policy import Labels, apply_policy, best_choice, policies_for, targets
from correctsweep.workers import ProcessWorkers, RayWorkers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOT_SEED_STRIDE = 1_000_000  # sampler seeds of sibling workers lie this far apart: more than any search's candidates
POLL_S = 1.0  # how often the parent of several workers reads the journal (reports, dead workers)
_log = optuna.logging.get_logger("optuna.correctsweep")  # beside Optuna's lines, under its verbosity


def stratified_cv_splits(y, k, seed, classes) -> list[np.ndarray]:
    """The rows each of k stratified CV splits inside `correct` holds out."""
    counts = np.bincount(y, minlength=len(classes))
    for c, n in zip(classes, counts):
        if n < k:
            raise CorrectsweepError(f"class {c} has {n} sample(s) in the correct split (less its calibration part when "
                                    f"certified), fewer than corrector.cv_splits={k}; lower cv_splits or enlarge "
                                    "data.correct_fraction")
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
                       policies_for(cfg.policies, excluded), check_taps(taps, {"correct": correct, "test": test}),
                       cfg, threads)


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
    """Tune a corrector of kind cfg.kind, refit it, certify its tau (corrector.max_harm), predict `test` once.
    Uncertified, the search and the refit use all of `correct`; certified, its fit part, and the calibration
    part certifies tau (see `certify`). `taps`: candidates (default: all in `correct`). A rerun of a finished
    search loads its saved result."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fit, calibration = certify.split(correct, cfg)
    setup = _setup(fit, test, cfg, threads, taps)
    rule = certify.Rule.of(cfg)
    if calibration is not None:  # before any candidate: rows too few to certify anything end the search here
        certify.check_size(_labels(calibration, setup), rule)
    kind = KINDS.get(cfg.kind)(setup)
    study = _open_study(workdir, cfg.seed)
    if _finished(study, cfg) and (workdir / RECORD).exists():
        try:
            return load_result(workdir)
        except CorrectsweepError as e:
            print(f"{e}: refitting the search's winner", flush=True)
    remove_outputs(workdir, cfg.kind)  # what is there did not verify (or the search is unfinished): rewritten below
    spent = _run_candidates(study, setup, kind, workdir, on_candidate)
    done = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == TrialState.COMPLETE for t in done):
        raise CorrectsweepError("the corrector search finished no candidate; raise corrector.timeout_s "
                                "or corrector.n_candidates")
    best = study.best_trial
    attrs = best.user_attrs | {"params": best.user_attrs["params"] | kind.fixed}  # this machine's device, threads
    started = time.perf_counter()
    projection = fit_projection(fit, attrs["taps"], attrs["pca_dims"], cfg.seed)
    model = kind.refit(*corrector_inputs(fit, attrs["taps"], projection), attrs)
    proba = model.predict_proba(corrector_inputs(test, attrs["taps"], projection)[0])
    tau, certificate, calibration_proba = attrs["tau"], None, None
    if calibration is not None:
        calibration_proba = model.predict_proba(corrector_inputs(calibration, attrs["taps"], projection)[0])
        target, conf = targets(calibration_proba, setup.classes, attrs["policy"], setup.excluded)
        certificate = certify.certify(target, conf, _labels(calibration, setup), rule, certify.corrector_taus(cfg),
                                      cfg)
        tau = certificate.tau
    result = CorrectorResult(
        kind=cfg.kind, policy=attrs["policy"], tau=tau, taps=attrs["taps"],
        pca_dims=projection.dims if projection else None, params=attrs["params"], n_rounds=attrs.get("n_rounds"),
        cv_score=best.value, objective=cfg.objective, classes=setup.classes, certificate=certificate,
        search_seconds=spent, seconds_per_candidate=spent / len(done), n_candidates=len(done),
        refit_seconds=time.perf_counter() - started,
        sha256={},  # the outputs' checksums: `save` takes them as it writes the files
        pred_h=apply_policy(proba, test.pred_f, setup.classes, attrs["policy"], tau, setup.excluded),
        proba=proba)
    return save(workdir, result, model, projection, {"test": (test, proba), "calibration": (calibration,
                                                                                           calibration_proba)})


def _labels(fs: FeatureSet, setup: SearchSetup) -> Labels:
    return Labels(fs.labels, fs.pred_f, setup.classes, setup.excluded)
