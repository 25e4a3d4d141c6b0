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

import base64
import contextlib
import copy
import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import ray
from ray import tune

from correctsweep import reach
from correctsweep.atomic import atomic_path, write_json, write_text
from correctsweep.config import Spec, digest, spec_from_dict
from correctsweep.errors import CorrectsweepError, SpecError
from correctsweep.layout import RunLayout, as_uri, is_uri


def search_space(spec: Spec) -> dict:
    """The spec's `search` (validated in config) as Tune search spaces, keyed by the dotted field."""
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {key: make[kind](arg) for key, space in spec.search.items() for kind, arg in space.items()}


def trial_spec(config: dict) -> Spec:
    """The trial's spec: the sweep's spec with this trial's sampled base-net values filled in."""
    raw = copy.deepcopy(config["spec"])
    for key, value in config.items():
        if key.startswith("base_net."):
            raw["base_net"][key.split(".", 1)[1]] = value
    return spec_from_dict(raw)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


class _Tee:
    """A stream writing to the trial's log file and to the worker's own output (which Ray shows
    on the driver's terminal only with --verbose)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_fold(config: dict) -> None:
    """The Tune trainable: one fold x seed end to end, reporting every epoch, stage and result; its
    output (the per-class table, warnings) goes to its log file under <run>/logs/."""
    from correctsweep.trial import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per candidate drowns the sweep's own lines
    spec = trial_spec(config)
    fold, seed = str(config["fold"]), int(config["seed"])
    node = ray.get_runtime_context().get_node_id()
    report = lambda m: tune.report(_scalars(m) | {"node": node})
    log_path = RunLayout.of(spec).trial_log(fold, seed, tune.get_context().get_trial_id())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh, contextlib.redirect_stdout(_Tee(fh, sys.stdout)), \
            contextlib.redirect_stderr(_Tee(fh, sys.stderr)):
        out = run_trial(spec, fold, seed, log=lambda line: print(line, flush=True), report=report)
    seconds = {f"seconds_{stage}": v for stage, v in out.stage_seconds.items()}
    done = {"stage": "done", "excluded_gain": out.per_class_value("gain", out.excluded),
            "cv_score": out.corrector.cv_score}
    report(done | out.summary | seconds)


STAGES = ("train", "features", "corrector")  # what run_fold reports, in order, before "done"


class ProgressLines(tune.Callback):
    """One line per trial state change and per finished stage, instead of Tune's wide tables, and an
    overall line (trials done, running and failed, and an ETA from the stage times measured so far)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.stage, self.since = {}, {}  # trial id -> its current stage, and when that stage began
        self.seconds = {s: [] for s in STAGES}  # measured seconds of each finished stage

    @staticmethod
    def name(trial) -> str:
        sampled = "".join(f" {k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f" {k.split('.', 1)[1]}={v}"
                          for k, v in trial.config.items() if k.startswith("base_net."))
        return f"fold {trial.config['fold']} seed {trial.config['seed']}{sampled}"

    @staticmethod
    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.stage[trial.trial_id], self.since[trial.trial_id] = STAGES[0], time.monotonic()
        self.say(f"{self.name(trial)}: started (log: {self.logs}/fold={trial.config['fold']}-"
                 f"seed={trial.config['seed']}-{trial.trial_id}.log)")
        self.say(self.overall(trials, trial, "RUNNING"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stage, last = result.get("stage"), self.stage.get(trial.trial_id)
        if last is not None and stage != last:
            now = time.monotonic()
            if last in self.seconds:
                self.seconds[last].append(now - self.since.get(trial.trial_id, now))
            self.since[trial.trial_id] = now
            self.say(f"{self.name(trial)}: {last} done")
        self.stage[trial.trial_id] = stage
        if stage == "done":
            self.say(f"{self.name(trial)}: f acc {result['accuracy_f']:.3f} -> h {result['accuracy_h']:.3f}, "
                     f"excluded-class Gain {result['excluded_gain']:.3f} (node {result['node'][:8]})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: finished")
        self.say(self.overall(trials, trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: FAILED (see {trial.path}/error.txt)")
        self.say(self.overall(trials, trial, "ERROR"))

    def overall(self, trials, current, status: str) -> str:
        states = {t.trial_id: t.status for t in trials} | {current.trial_id: status}
        done, failed = sum(s == "TERMINATED" for s in states.values()), sum(s == "ERROR" for s in states.values())
        running = [t for t in trials if states[t.trial_id] == "RUNNING"]
        line = f"{done} of {len(trials)} trials done, {len(running)} running, {failed} failed"
        pending = len(trials) - done - failed - len(running)
        if not pending and not running:
            return line
        if not all(self.seconds.values()):
            return line + "; ETA once every stage has been timed"
        mean = {s: sum(v) / len(v) for s, v in self.seconds.items()}
        left = pending * sum(mean.values())
        for t in running:  # its current stage's expected rest, then the stages after it
            stage = self.stage.get(t.trial_id, STAGES[0])
            at = STAGES.index(stage) if stage in STAGES else len(STAGES)
            left += max(0.0, mean[stage] - (time.monotonic() - self.since[t.trial_id])) if at < len(STAGES) else 0
            left += sum(mean[s] for s in STAGES[at + 1:])
        seconds = left / max(1, len(running))
        return line + f"; ETA {int(seconds // 60)} min {int(seconds % 60)} s"


STATE_RECORD_EVERY_S = {"local": 0.0, "remote": 10.0}  # listing a bucket costs requests: not every step


def _state_files(experiment: str) -> dict[str, bytes]:
    """Every file of a Tune experiment that resuming it unpickles: its top-level state files (tuner.pkl,
    experiment_state-*.json, basic-variant-state-*.json) and the trials' error.pkl, by relative path."""
    fs, root = pafs.FileSystem.from_uri(as_uri(experiment))
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        rel = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and ("/" not in rel or rel.endswith("/error.pkl")):
            with fs.open_input_stream(info.path) as fh:
                out[rel] = fh.readall()
    return out


def _sha256(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


class StateRecord(tune.Callback):
    """Records the experiment's state files beside it after every step (Tune saves its state in a step
    before the step's callbacks run) and at the end, with their checksums: `restore_state` resumes from
    these, i.e. from a state this tool wrote, whatever a kill or a stranger left in the experiment."""

    def __init__(self, experiment: str, record: str):
        self.experiment, self.record = experiment, record
        self.written, self.at = None, 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.at >= STATE_RECORD_EVERY_S["remote" if is_uri(self.record) else "local"]:
            self.save()

    def on_experiment_end(self, trials, **info):
        self.save()

    def save(self) -> None:
        self.at = time.monotonic()
        files = _state_files(self.experiment)
        sha = _sha256(files)
        if files and sha != self.written:
            content = {rel: base64.b64encode(data).decode() for rel, data in files.items()}
            _write_record(self.record, {"sha256": sha, "content": content})
            self.written = sha


def _write_record(location: str, obj: dict) -> None:
    if not is_uri(location):
        write_json(location, obj)
        return
    fs, path = pafs.FileSystem.from_uri(location)
    with fs.open_output_stream(path) as fh:
        fh.write(json.dumps(obj, indent=2).encode())


def _read_record(record: str) -> dict[str, bytes]:
    """The state files a StateRecord saved, each checked against its recorded checksum."""
    fs, path = pafs.FileSystem.from_uri(as_uri(record))
    with fs.open_input_stream(path) as fh:
        raw = json.loads(fh.readall())
    files = {rel: base64.b64decode(text, validate=True) for rel, text in raw["content"].items()}
    if not files or _sha256(files) != raw["sha256"] or any(rel.startswith("/") or ".." in rel.split("/")
                                                           for rel in files):
        raise ValueError("its files do not match their checksums")
    return files


def restore_state(experiment: str, record: str) -> list[str]:
    """Put back the state files the last StateRecord saved, so that Tune resumes from them and unpickles
    nothing else: a file a kill left half-saved, or newer than the record, or planted, is set back to its
    recorded content or removed. Returns the files it set back; a one-line error when there is no
    readable record."""
    try:
        recorded = _read_record(record)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CorrectsweepError(f"not resuming {experiment}: it has no readable record of its state files ({record}), "
                                "so this tool cannot tell it wrote them, and resuming runs the code they hold; "
                                f"delete {experiment} to sweep this spec anew (its trials reuse the trained nets, "
                                "features and corrector searches), or pass --set name=NEW") from None
    current = _state_files(experiment)
    fs, root = pafs.FileSystem.from_uri(as_uri(experiment))
    changed = sorted(rel for rel in set(recorded) | set(current) if recorded.get(rel) != current.get(rel))
    for rel in changed:
        if rel in recorded:
            if is_uri(experiment):
                with fs.open_output_stream(f"{root}/{rel}") as fh:
                    fh.write(recorded[rel])
            else:
                with atomic_path(Path(experiment) / rel) as tmp:
                    Path(tmp).write_bytes(recorded[rel])
        else:
            fs.delete_file(f"{root}/{rel}")
    return changed


# tracking key -> (module, how to install it)
TRACKERS = {"mlflow": ("mlflow", "pip install -e '.[tracking]'"), "wandb": ("wandb", "pip install wandb")}


def tracking_callbacks(spec: Spec) -> list:
    """Tune's own MLflow and W&B loggers for the spec's `tracking`: each runs on the driver and keeps one
    run per trial, with the trial's config as params and every reported dict as metrics."""
    for key in spec.tracking:
        module, install = TRACKERS[key]
        try:
            importlib.import_module(module)
        except ImportError:
            raise SpecError(f"tracking.{key} needs the {module} package, which is not installed: {install}") from None
    callbacks = []
    if "mlflow" in spec.tracking:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=spec.tracking["mlflow"], experiment_name=spec.name,
                                              save_artifact=False))
    if "wandb" in spec.tracking:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=spec.tracking["wandb"]))
    return callbacks


TRACKING_TIMEOUT_S = 30.0  # importing mlflow alone takes ~5 s on 2 busy cores
MLFLOW_PROBE = "from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments(max_results=1)"


def check_tracking(spec: Spec) -> None:
    """A one-line error, before anything is written, when the MLflow tracking store does not answer.
    A file store (file://... or a plain path) is MLflow's own local format: MLflow 3 asks to opt in to
    it with MLFLOW_ALLOW_FILE_STORE, which naming one in the spec does."""
    uri = spec.tracking.get("mlflow")
    if uri is None:
        return
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    # the client retries an unreachable server for minutes; the probe asks once, with a timeout
    problem = reach.probe(MLFLOW_PROBE.format(uri=uri), TRACKING_TIMEOUT_S, env={
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    if problem:
        raise SpecError(f"tracking.mlflow {uri} does not answer ({problem}); start the server or fix the URI, "
                        "or track to a local file: tracking={mlflow: 'sqlite:///outputs/mlflow.db'}")


def check_folds(spec: Spec) -> list[str]:
    """Load the dataset once before any trial starts: a data error, a fold naming no class or a net
    that does not fit the data surfaces as one line here rather than as every trial failing, the trials
    find the decoded cache, and 'all' expands to its classes."""
    from correctsweep.data import load_dataset, resolve_fold
    from correctsweep.trial import plan_net

    ds = load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))
    plan_net(spec, ds)
    folds = [str(c) for c in ds.classes] if "all" in spec.folds else []
    folds += [resolve_fold(f, ds) for f in spec.folds if f != "all"]
    return list(dict.fromkeys(folds))


def absolute(spec: Spec) -> Spec:
    """Tune runs trials in their own working directories, so relative paths must be resolved first."""
    spec = copy.deepcopy(spec)
    if not is_uri(spec.storage):
        spec.storage = str(Path(spec.storage).resolve())
    if spec.data.path and not is_uri(spec.data.path):
        spec.data.path = str(Path(spec.data.path).resolve())
    if spec.data.cache_dir:
        spec.data.cache_dir = str(Path(spec.data.cache_dir).resolve())
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
    with layout.sweep_lock(), _terminate_as_interrupt():
        return _sweep(spec, layout, address, resume, verbose, callbacks)


def _sweep(spec: Spec, layout: RunLayout, address: str | None, resume: bool, verbose: bool, callbacks: list) -> Path:
    from correctsweep.best import select_best
    from correctsweep.report import collect
    from correctsweep.trial import core_warning

    # One Tune experiment per spec: a changed spec (say, a retuned corrector) is a new experiment in the
    # same run directory, whose trials reuse the models and features the stage cache already holds.
    name = f"tune-{digest(spec.to_dict())}"
    experiment, record = f"{layout.experiments}/{name}", layout.state_record(name)
    exists = tune.Tuner.can_restore(experiment)
    if resume and not exists:
        raise SpecError(f"--resume: no sweep of this spec to resume at {experiment}; run without --resume to start one")
    if exists:
        if not resume:
            _offer_resume(experiment)
        set_back = restore_state(experiment, record)  # before Tune unpickles anything of it
        if set_back:
            print(f"resuming from the state this tool last recorded ({record}); set back {', '.join(set_back)}, "
                  "which a kill left newer than the record or someone else wrote", flush=True)
    folds = check_folds(spec)
    if warning := core_warning(spec):
        print(f"warning: {warning}", flush=True)
    write_text(layout.spec_file, spec.to_yaml())  # what collect expects: every fold x seed
    layout.push(["spec.yaml"])

    # Tune saves its experiment state at most every 10 s by default; a kill inside that window loses
    # finished trials from --resume's view. A sweep has tens of trials, so saving often costs nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    started_ray = not ray.is_initialized()
    started = time.perf_counter()
    try:
        with _ray_output(layout.logs_dir, verbose):
            if started_ray:
                ray.init(address=address, configure_logging=False, include_dashboard=False, log_to_driver=verbose)
                signal.signal(signal.SIGTERM, _sigterm_as_sigint)  # ray.init installs its core's, which aborts
            spec = trial_devices(spec, ray.cluster_resources().get("GPU", 0), local=address is None)
            grid = _fit(spec, layout, folds, name, experiment, record, exists, callbacks, verbose)
    finally:
        if started_ray:
            ray.shutdown()
    errors = [r for r in grid if r.error]
    if any(not r.error and (r.metrics or {}).get("stage") != "done" for r in grid):
        raise KeyboardInterrupt  # Tune caught a Ctrl-C (or SIGTERM), saved its state and stopped the trials
    if len(errors) == len(grid):
        first = str(errors[0].error).strip().splitlines()[-1][:200]
        raise SpecError(f"all {len(grid)} trials failed, e.g. {first}; their logs are under {layout.logs_dir} and "
                        f"their errors under {experiment}")
    layout.pull(["results", "predictions", "correctors", "models"])
    report = collect(layout.root)
    best = select_best(layout.root)
    layout.push(["report", "best"])
    print(_final_table(grid))
    print(stage_totals(grid))
    print(f"sweep '{spec.name}' finished in {time.perf_counter() - started:.0f} s: "
          f"{len(grid) - len(errors)} of {len(grid)} trials succeeded")
    print(f"report: {report / 'report.md'}\nbest:   {best / 'best_config.yaml'}\nlogs:   {layout.logs_dir}/")
    if errors:
        raise SpecError(f"{len(errors)} trial(s) failed; their logs are under {layout.logs_dir} and their errors "
                        f"under {experiment}; fix the cause and rerun with --resume")
    return layout.root


def _fit(spec: Spec, layout: RunLayout, folds: list[str], name: str, experiment: str, record: str, exists: bool,
         callbacks: list, verbose: bool):
    """Tune's run of the trials (a restored experiment keeps the callbacks it was created with)."""
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    trainable = tune.with_resources(run_fold, resources)
    param_space = {"spec": spec.to_dict(), "fold": tune.grid_search(folds),
                   "seed": tune.grid_search(list(spec.seeds))} | search_space(spec)
    run_config = tune.RunConfig(name=name, storage_path=layout.experiments, verbose=1 if verbose else 0,
                                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                                callbacks=[ProgressLines(layout.logs_dir), StateRecord(experiment, record), *callbacks])
    print(f"sweep '{spec.name}': folds {', '.join(folds)} x seeds {spec.seeds}"
          f"{f' x {spec.num_samples} samples' if spec.search else ''}, {resources} per trial -> {spec.run_dir}\n"
          f"logs: each trial's in {layout.logs_dir}/, Ray's in {layout.logs_dir / 'ray.log'}"
          f"{'' if verbose else ' (--verbose shows them here)'}", flush=True)
    if exists:
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                           tune_config=tune.TuneConfig(num_samples=spec.num_samples,
                                                       max_concurrent_trials=spec.resources.max_concurrent))
    grid = tuner.fit()
    StateRecord(experiment, record).save()  # Tune's last save may follow its callbacks' last call
    return grid


def stage_totals(grid) -> str:
    """Seconds per pipeline stage summed over the trials that finished: where the next speed-up is."""
    totals = {}
    for r in grid:
        for key, value in (r.metrics or {}).items():
            if key.startswith("seconds_"):
                totals[key.removeprefix("seconds_")] = totals.get(key.removeprefix("seconds_"), 0.0) + value
    if not totals:
        return "stage seconds: no trial finished"
    total = sum(totals.values())
    return "stage seconds summed over trials: " + ", ".join(
        f"{k} {v:.0f} ({v / total:.0%})" for k, v in totals.items()) + f"; total {total:.0f}"


def _final_table(grid) -> str:
    import pandas as pd

    rows = []
    for r in grid:
        m = r.metrics or {}
        rows.append({"fold": r.config["fold"], "seed": r.config["seed"],
                     **{k.split(".", 1)[1]: v for k, v in r.config.items() if k.startswith("base_net.")},
                     "status": "error" if r.error else m.get("stage", "?"),
                     "acc f": m.get("accuracy_f"), "bal acc f": m.get("balanced_accuracy_f"),
                     "acc h": m.get("accuracy_h"), "bal acc h": m.get("balanced_accuracy_h"),
                     "excluded Gain": m.get("excluded_gain"), "macro harm": m.get("macro_harm"),
                     "node": str(m.get("node", ""))[:8]})
    table = pd.DataFrame(rows).sort_values(["fold", "seed"])
    return table.to_string(index=False, float_format=lambda x: f"{x:.3f}")
