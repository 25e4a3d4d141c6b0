"""The Ray Tune sweep: every fold x seed (x base-net sample) is one Tune trial running `run_trial`.

Tune owns scheduling, resources, retries and the experiment state (under <run>/tune-<spec key>, so
`Tuner.restore` can continue a killed sweep without rerunning finished trials). The pipeline's own
stage cache (models, features, the corrector's Optuna journal) makes a restarted trial pick up
from its last completed stage. After the trials, `collect` and `best` run on the run directory.

Storage may be a local or shared path, or a URI (s3://, gs://, file://): with a URI each trial
works in a local mirror of its fold's folders and copies them back with pyarrow's filesystems.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import time
from pathlib import Path

import optuna
import ray
from ray import tune

from correctsweep.atomic import write_text
from correctsweep.config import Spec, digest, spec_from_dict
from correctsweep.errors import SpecError
from correctsweep.layout import RunLayout, is_uri


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


def run_fold(config: dict) -> None:
    """The Tune trainable: one fold x seed end to end, reporting every epoch, stage and result."""
    from correctsweep.trial import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per candidate drowns the sweep's own lines
    spec = trial_spec(config)
    fold, seed = str(config["fold"]), int(config["seed"])
    node = ray.get_runtime_context().get_node_id()
    report = lambda m: tune.report(_scalars(m) | {"node": node})
    out = run_trial(spec, fold, seed, log=lambda line: print(line, flush=True), report=report)
    seconds = {f"seconds_{stage}": v for stage, v in out.stage_seconds.items()}
    done = {"stage": "done", "excluded_gain": out.per_class_value("gain", out.excluded),
            "cv_score": out.corrector.cv_score}
    report(done | out.summary | seconds)


class ProgressLines(tune.Callback):
    """One line per trial state change and per finished stage, instead of Tune's wide tables."""

    def __init__(self):
        self.stage = {}

    @staticmethod
    def name(trial) -> str:
        sampled = "".join(f" {k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f" {k.split('.', 1)[1]}={v}"
                          for k, v in trial.config.items() if k.startswith("base_net."))
        return f"fold {trial.config['fold']} seed {trial.config['seed']}{sampled}"

    @staticmethod
    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stage, last = result.get("stage"), self.stage.get(trial.trial_id)
        if last is not None and stage != last:
            self.say(f"{self.name(trial)}: {last} done")
        self.stage[trial.trial_id] = stage
        if stage == "done":
            self.say(f"{self.name(trial)}: f acc {result['accuracy_f']:.3f} -> h {result['accuracy_h']:.3f}, "
                     f"excluded-class Gain {result['excluded_gain']:.3f} (node {result['node'][:8]})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.say(f"{self.name(trial)}: FAILED (see {trial.path}/error.txt)")


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


def run_sweep(spec: Spec, address: str | None = None, resume: bool = False) -> Path:
    """Run every fold x seed of the spec as Tune trials, then collect and select; returns the local run dir."""
    from correctsweep.best import select_best
    from correctsweep.collect import collect
    from correctsweep.trial import core_warning

    spec = absolute(spec)
    RunLayout.of(spec).check_writable()
    folds = check_folds(spec)
    if warning := core_warning(spec):
        print(f"warning: {warning}", flush=True)
    layout = RunLayout.of(spec)
    write_text(layout.spec_file, spec.to_yaml())  # what collect expects: every fold x seed
    layout.push(["spec.yaml"])
    # One Tune experiment per spec: a changed spec (say, a retuned corrector) is a new experiment in the
    # same run directory, whose trials reuse the models and features the stage cache already holds.
    name = f"tune-{digest(spec.to_dict())}"
    experiment = f"{layout.experiments}/{name}"
    exists = tune.Tuner.can_restore(experiment)
    if resume and not exists:
        raise SpecError(f"--resume: no sweep of this spec to resume at {experiment}; run without --resume to start one")
    if exists and not resume:
        _offer_resume(experiment)

    # Tune saves its experiment state at most every 10 s by default; a kill inside that window loses
    # finished trials from --resume's view. A sweep has tens of trials, so saving often costs nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not ray.is_initialized():
        ray.init(address=address, configure_logging=False, include_dashboard=False)
    spec = trial_devices(spec, ray.cluster_resources().get("GPU", 0), local=address is None)
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    trainable = tune.with_resources(run_fold, resources)
    param_space = {"spec": spec.to_dict(), "fold": tune.grid_search(folds),
                   "seed": tune.grid_search(list(spec.seeds))} | search_space(spec)
    run_config = tune.RunConfig(name=name, storage_path=layout.experiments, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                                callbacks=[ProgressLines(), *tracking_callbacks(spec)])
    print(f"sweep '{spec.name}': folds {', '.join(folds)} x seeds {spec.seeds}"
          f"{f' x {spec.num_samples} samples' if spec.search else ''}, {resources} per trial -> {spec.run_dir}",
          flush=True)
    started = time.perf_counter()
    if exists:
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                           tune_config=tune.TuneConfig(num_samples=spec.num_samples,
                                                       max_concurrent_trials=spec.resources.max_concurrent))
    grid = tuner.fit()
    errors = [r for r in grid if r.error]
    if len(errors) == len(grid):
        first = str(errors[0].error).strip().splitlines()[-1][:200]
        raise SpecError(f"all {len(grid)} trials failed, e.g. {first}; their errors are under {experiment}")
    layout.pull(["results", "correctors", "models"])
    report = collect(layout.root)
    best = select_best(layout.root)
    layout.push(["report", "best"])
    print(_final_table(grid))
    print(stage_totals(grid))
    print(f"sweep '{spec.name}' finished in {time.perf_counter() - started:.0f} s: "
          f"{len(grid) - len(errors)} of {len(grid)} trials succeeded")
    print(f"report: {report / 'report.md'}\nbest:   {best / 'best_config.yaml'}")
    if errors:
        raise SpecError(f"{len(errors)} trial(s) failed; their errors are under {experiment}; "
                        f"fix the cause and rerun with --resume")
    return layout.root


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
