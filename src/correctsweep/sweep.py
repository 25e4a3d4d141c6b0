"""The Ray Tune sweep: every fold x seed (x base-net sample) is one Tune trial running `run_trial`.

Tune owns scheduling, resources, retries and the experiment state (under <run>/tune-<spec key>, so
`Tuner.restore` can continue a killed sweep without rerunning finished trials). The pipeline's own
stage cache (models, features, the corrector's Optuna journal) makes a restarted trial pick up
from its last completed stage. After the trials, `collect` and `best` run on the run directory.

Storage may be a local or shared path, or a URI (s3://, gs://, file://): with a URI each trial
works in a local mirror of its fold's folders and copies them back with pyarrow's filesystems.

Before anything is written or Ray starts, the sweep checks that storage and tracking answer, holds the
run directory's sweep lock, and, when the spec was swept before, that the Tune experiment it would
resume is the one this tool wrote: resuming unpickles Tune's state files, so they are recorded beside
the experiment, with their SHA-256 checksums, after every save (`StateRecord`), and a resume first puts
the recorded files back (a kill between Tune's save and the record's, or a planted file, changes nothing).

The console gets one line per trial state and stage and an overall progress line (`ProgressLines`);
each trial's output goes to its log file under <run>/logs/ and Ray's own messages to logs/ray.log,
unless --verbose brings Ray's output back.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from correctsweep.atomic import write_text
from correctsweep.config import Spec, spec_from_dict
from correctsweep.console import ProgressLines, Tee, final_table, stage_totals
from correctsweep.errors import SpecError
from correctsweep.hashing import digest
from correctsweep.keys import net_key
from correctsweep.layout import RunLayout, is_uri
from correctsweep.schedulers import StoppedTrial, was_stopped
from correctsweep.schedulers import make as make_scheduler
from correctsweep.tracking import check_tracking, tracking_callbacks
from correctsweep.tune_state import StateRecord, restore_state

SEARCH_SEED = 0  # seeds the drawing of `search` samples: a committed spec's search is the same one everywhere


def search_space(spec: Spec) -> dict:
    """The spec's `search` (validated in config) as Tune search spaces, keyed by the dotted field."""
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {key: make[kind](arg) for key, space in spec.search.items() for kind, arg in space.items()}


def trial_spec(config: dict) -> Spec:
    """The trial's spec: the sweep's spec with this trial's sampled base-net values filled in."""
    raw = copy.deepcopy(config["spec"])
    for key, value in config.items():
        if key.startswith("base_net."):  # a base_net field, or a setting of the net's family (base_net.paper.heads)
            *sections, name = key.split(".")
            node = raw
            for section in sections:
                node = node.setdefault(section, {})
            node[name] = value
    return spec_from_dict(raw)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def run_fold(config: dict) -> None:
    """The Tune trainable: one fold x seed end to end, reporting every epoch, stage and result; its
    output (the per-class table, warnings) goes to its log file under <run>/logs/."""
    from correctsweep.entry import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per candidate drowns the sweep's own lines
    spec = trial_spec(config)
    fold, seed = str(config["fold"]), int(config["seed"])
    node = ray.get_runtime_context().get_node_id()
    progress = lambda m: tune.report(_scalars(m) | {"node": node})
    log_path = RunLayout.of(spec).trial_log(fold, seed, tune.get_context().get_trial_id())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh, contextlib.redirect_stdout(Tee(fh, sys.stdout)), \
            contextlib.redirect_stderr(Tee(fh, sys.stderr)):
        out = run_trial(spec, fold, seed, log=lambda line: print(line, flush=True), progress=progress)
    seconds = {f"seconds_{stage}": v for stage, v in out.stage_seconds.items()}
    certificate = out.corrector.certificate
    done = {"stage": "done", "gain_excluded": out.per_class_value("gain", out.excluded),
            "cv_score": out.corrector.cv_score, "harm_bound": certificate.max_harm if certificate else math.nan}
    progress(done | out.summary | seconds)


def check_folds(spec: Spec) -> list[str]:
    """Load the dataset once before any trial starts: a data error, a fold naming no class, a net that
    does not fit the data or a checkpoint (base_net.weights) missing or unfit for some fold x seed surfaces
    as one line here rather than as trials failing, the trials find the decoded cache, and 'all' expands to
    its classes."""
    from correctsweep.checkpoints import plan_all
    from correctsweep.data import load_dataset, make_splits, resolve_fold
    from correctsweep.plugins import SOURCES
    from correctsweep.trial import plan_net

    if SOURCES.get(spec.data.source).holds_features:  # a features table: no images, no net
        from correctsweep.from_features import check_table_folds

        return check_table_folds(spec, spec.folds)
    ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
    make_splits(ds, spec.data)  # here, in the main thread, data.group_pattern's time is bounded (data.group_keys)
    plan_net(spec, ds)
    folds = [str(c) for c in ds.classes] if "all" in spec.folds else []
    folds = list(dict.fromkeys(folds + [resolve_fold(f, ds) for f in spec.folds if f != "all"]))
    plan_all(spec.base_net, folds, spec.seeds, ds.classes, ds.class_names)
    return folds


def absolute(spec: Spec) -> Spec:
    """Tune runs trials in their own working directories, so relative paths must be resolved first."""
    spec = copy.deepcopy(spec)
    if not is_uri(spec.storage):
        spec.storage = str(Path(spec.storage).resolve())
    if spec.data.path and not is_uri(spec.data.path):
        spec.data.path = str(Path(spec.data.path).resolve())
    if spec.data.cache_dir:
        spec.data.cache_dir = str(Path(spec.data.cache_dir).resolve())
    if spec.base_net.weights:
        spec.base_net.weights = str(Path(spec.base_net.weights).resolve())
    return spec


def trial_devices(spec: Spec, cluster_gpus: float, local: bool) -> Spec:
    """The spec the trials get, given the GPUs Ray sees. Since Ray 2.60 a trial that asks for no GPU
    still sees every GPU (CUDA_VISIBLE_DEVICES is no longer emptied), so `device: auto` would put
    every concurrent trial on GPU 0 without Ray counting it: such trials are sent to the CPU."""
    gpus = spec.resources.gpus_per_trial
    if gpus > 0 and cluster_gpus == 0 and local:
        raise SpecError(f"resources.gpus_per_trial is {gpus} but this machine has no GPU Ray can see; "
                        "set it to 0 (the trials then run on the CPU)")
    if gpus > 0 or cluster_gpus == 0:
        return spec
    for key, cfg in (("base_net.device", spec.base_net), ("corrector.device", spec.corrector)):
        if cfg.device == "cuda":
            raise SpecError(f"{key} is cuda but resources.gpus_per_trial is 0, so Ray would not count the GPU "
                            f"the trials use; set resources.gpus_per_trial (e.g. 0.25) or {key}=cpu")
    print(f"the cluster has {cluster_gpus:g} GPU(s) but resources.gpus_per_trial is 0: trials run on the CPU "
          "(set resources.gpus_per_trial, e.g. 0.25, to use them)", flush=True)
    spec = copy.deepcopy(spec)
    spec.base_net.device = spec.corrector.device = "cpu"
    return spec


def check_cpus(spec: Spec, address: str | None) -> None:
    """Tune would wait forever for a trial that asks for more CPUs than any node has: say so at once. Before a
    local Ray starts, this machine's CPUs count; once Ray runs, its largest node's (a cluster's autoscaler may
    still add larger ones, so there it is a warning)."""
    need = spec.resources.cpus_per_trial
    if ray.is_initialized():
        cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
    elif address is None:
        cpus = os.cpu_count() or 1
    else:
        return  # a cluster not joined yet: checked once it is
    if need <= cpus:
        return
    if address is None:
        raise SpecError(f"resources.cpus_per_trial is {need:g} but this machine offers {cpus:g} CPUs, so no trial "
                        f"could start; set resources.cpus_per_trial to at most {cpus:g}")
    print(f"warning: resources.cpus_per_trial is {need:g} but the cluster's largest node has {cpus:g} CPUs: no trial "
          "starts until its autoscaler adds a larger node", flush=True)


def _offer_resume(experiment: str) -> None:
    """An identical spec was swept before (killed or finished): continuing it is what the user wants
    almost always, so a terminal asks and a batch job (ray job submit) just resumes."""
    if sys.stdin.isatty():
        answer = input(f"A sweep with this spec already exists at {experiment}. Resume it? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            raise SpecError(f"not resuming {experiment}: pass --set name=NEW to start a separate sweep")
    else:
        print(f"a sweep with this spec already exists at {experiment}: resuming it", flush=True)


def _sigterm_as_sigint(*_) -> None:
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch scheduler's stop, `kill`) handled as Ctrl-C: Tune saves its state and the sweep
    shuts down the Ray it started, where Python's default would leave Ray's processes running."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def _ray_output(logs: Path, verbose: bool) -> Iterator[None]:
    """Without --verbose, Ray's and Tune's messages (start-up notices, slow-step warnings, the trials'
    forwarded output) go to logs/ray.log instead of the terminal, which keeps ProgressLines' lines."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"  # the old reporter, silent at verbose=0
    if verbose:
        yield
        return
    logs.mkdir(parents=True, exist_ok=True)
    # ray.init(configure_logging=False) clears the "ray" logger's handlers, after which its records
    # would reach Python's last-resort handler (stderr): they are passed up to a root handler instead
    ray_logger, root, handler = logging.getLogger("ray"), logging.getLogger(), logging.FileHandler(logs / "ray.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = ray_logger.handlers[:], ray_logger.propagate
    ray_logger.handlers, ray_logger.propagate = [], True
    root.addHandler(handler)
    try:
        yield
    finally:
        ray_logger.handlers, ray_logger.propagate = saved
        root.removeHandler(handler)
        handler.close()


def run_sweep(spec: Spec, address: str | None = None, resume: bool = False, verbose: bool = False) -> Path:
    """Run every fold x seed of the spec as Tune trials, then collect and select; returns the local run dir."""
    spec = absolute(spec)
    layout = RunLayout.of(spec)
    layout.check_writable()
    callbacks = tracking_callbacks(spec)
    check_tracking(spec)
    check_cpus(spec, address)
    with layout.sweep_lock(), _terminate_as_interrupt():
        return _sweep(spec, layout, address, resume, verbose, callbacks)


def _sweep(spec: Spec, layout: RunLayout, address: str | None, resume: bool, verbose: bool, callbacks: list) -> Path:
    from correctsweep.best import select_best
    from correctsweep.report import collect
    from correctsweep.trial import core_warning

    # One Tune experiment per spec: a changed spec (say, a retuned corrector) is a new experiment in the
    # same run directory, whose trials reuse the models and features the stage cache already holds.
    name = f"tune-{digest(spec.to_dict())}"
    experiment = Experiment(name, f"{layout.experiments}/{name}", layout.state_record(name))
    if resume and not experiment.exists:
        raise SpecError(f"--resume: no sweep of this spec to resume at {experiment.path}; run without --resume to "
                        "start one")
    if experiment.exists:
        if not resume:
            _offer_resume(experiment.path)
        set_back = restore_state(experiment.path, experiment.record)  # before Tune unpickles anything of it
        if set_back:
            print(f"resuming from the state this tool last recorded ({experiment.record}); set back "
                  f"{', '.join(set_back)}, which a kill left newer than the record or someone else wrote", flush=True)
    folds = check_folds(spec)
    if warning := core_warning(spec):
        print(f"warning: {warning}", flush=True)
    write_text(layout.spec_file, spec.to_yaml())  # what collect expects: every fold x seed
    layout.push(["spec.yaml"])

    # Tune saves its experiment state at most every 10 s by default; a kill inside that window loses
    # finished trials from --resume's view. A sweep has tens of trials, so saving often costs nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if spec.scheduler.name:  # Tune fails a trial whose result lacks the scheduler's metric, as the results of
        # the stages after training do; the schedulers pass over those results (see `schedulers`)
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    started_ray = not ray.is_initialized()
    started = time.perf_counter()
    try:
        with _ray_output(layout.logs_dir, verbose):
            if started_ray:
                ray.init(address=address, configure_logging=False, include_dashboard=False, log_to_driver=verbose)
                signal.signal(signal.SIGTERM, _sigterm_as_sigint)  # ray.init installs its core's, which aborts
            spec = trial_devices(spec, ray.cluster_resources().get("GPU", 0), local=address is None)
            check_cpus(spec, address)
            grid = _fit(spec, layout, folds, experiment, callbacks, verbose)
    finally:
        if started_ray:
            ray.shutdown()
    errors = [r for r in grid if r.error]
    stopped = _record_stopped(spec, layout, grid)
    if any(not r.error and (r.metrics or {}).get("stage") != "done" and not was_stopped(r.metrics) for r in grid):
        raise KeyboardInterrupt  # Tune caught a Ctrl-C (or SIGTERM), saved its state and stopped the trials
    if len(errors) == len(grid):
        first = str(errors[0].error).strip().splitlines()[-1][:200]
        raise SpecError(f"all {len(grid)} trials failed, e.g. {first}; their logs are under {layout.logs_dir} and "
                        f"their errors under {experiment.path}")
    layout.pull(["results", "predictions", "correctors", "models"])
    report = collect(layout.root)
    best = select_best(layout.root)
    layout.push(["report", "best"])
    print(final_table(grid))
    print(stage_totals(grid))
    print(f"sweep '{spec.name}' finished in {time.perf_counter() - started:.0f} s: "
          f"{len(grid) - len(errors) - stopped} of {len(grid)} trials succeeded"
          + (f", {stopped} stopped early by the {spec.scheduler.name} scheduler" if stopped else ""))
    print(f"report: {report / 'report.md'}\nbest:   {best / 'best_config.yaml'}\nlogs:   {layout.logs_dir}/")
    if errors:
        raise SpecError(f"{len(errors)} trial(s) failed; their logs are under {layout.logs_dir} and their errors "
                        f"under {experiment.path}; fix the cause and rerun with --resume")
    return layout.root


def _record_stopped(spec: Spec, layout: RunLayout, grid) -> int:
    """Record each trial the scheduler stopped (schedulers.StoppedTrial), which collect and best leave out;
    returns how many there are."""
    stopped = [r for r in grid if not r.error and was_stopped(r.metrics)]
    for r in stopped:
        fold, seed = str(r.config["fold"]), int(r.config["seed"])
        record = StoppedTrial(fold, seed, net_key(trial_spec(r.config), fold, seed), int(r.metrics["epoch"]),
                              float(r.metrics["val_accuracy"]), spec.scheduler.name,
                              {k: v for k, v in r.config.items() if k.startswith("base_net.")})
        record.write(layout)
        layout.push([layout.relative(layout.stopped_file(fold, seed, record.net_key))])
    return len(stopped)


@dataclass
class Experiment:
    """The Tune experiment a spec sweeps into: one per spec, in the run directory."""

    name: str
    """tune-<digest of the spec>."""
    path: str
    record: str
    """Where StateRecord keeps its state files (tune_state)."""

    @property
    def exists(self) -> bool:
        return tune.Tuner.can_restore(self.path)


def tune_config(spec: Spec) -> tune.TuneConfig:
    """How Tune runs the spec's trials. The `search` samples are drawn with SEARCH_SEED. A finished trial's
    worker runs the next trial: starting a worker (Python, torch, XGBoost) took longer than a small trial's
    work, e.g. 121 s against 33 s for the eleven trials of a features table. Not under a scheduler: a worker
    it stops mid-epoch is still training when Tune would hand it the next trial, which then fails."""
    # the cap goes to the generator: Tune ignores max_concurrent_trials beside a search_alg of this kind
    searcher = BasicVariantGenerator(random_state=SEARCH_SEED, max_concurrent=spec.resources.max_concurrent or 0)
    return tune.TuneConfig(num_samples=spec.num_samples, scheduler=make_scheduler(spec), search_alg=searcher,
                           reuse_actors=not spec.scheduler.name)


def _fit(spec: Spec, layout: RunLayout, folds: list[str], experiment: Experiment, callbacks: list, verbose: bool):
    """Tune's run of the trials (a restored experiment keeps the callbacks it was created with)."""
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    trainable = tune.with_resources(run_fold, resources)
    param_space = {"spec": spec.to_dict(), "fold": tune.grid_search(folds),
                   "seed": tune.grid_search(list(spec.seeds))} | search_space(spec)
    record = StateRecord(experiment.path, experiment.record)
    run_config = tune.RunConfig(name=experiment.name, storage_path=layout.experiments, verbose=1 if verbose else 0,
                                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                                callbacks=[ProgressLines(layout.logs_dir), record, *callbacks])
    print(f"sweep '{spec.name}': folds {', '.join(folds)} x seeds {spec.seeds}"
          f"{f' x {spec.num_samples} samples' if spec.search else ''}, {resources} per trial"
          f"{f', the {spec.scheduler.name} scheduler' if spec.scheduler.name else ''} -> {spec.run_dir}\n"
          f"logs: each trial's in {layout.logs_dir}/, Ray's in {layout.logs_dir / 'ray.log'}"
          f"{'' if verbose else ' (--verbose shows them here)'}", flush=True)
    if experiment.exists:
        tuner = tune.Tuner.restore(experiment.path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                           tune_config=tune_config(spec))
    grid = tuner.fit()
    record.save()  # Tune's last save may follow its callbacks' last call
    return grid


