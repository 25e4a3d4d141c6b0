"""Checking a parsed spec: every section's values, and each plug-in's own settings by the plug-in.

Each check raises a SpecError naming the first impossible key, before anything runs.
"""

from __future__ import annotations

import re
import string
from typing import Any

from correctsweep.config.schema import (
    OBJECTIVES,
    POLICIES,
    SEARCH_SPACES,
    BaseNetConfig,
    CorrectorConfig,
    DataConfig,
    ReportConfig,
    SchedulerConfig,
    Spec,
    plugin_field,
)
from correctsweep.errors import SpecError
from correctsweep.metrics import HARM_MEASURES
from correctsweep.plugins import NETS, SCHEDULERS, SOURCES

SCHEDULES = ("cosine", "one_cycle")  # base_net.schedule, see train._optimiser
MAX_INT = 2**32 - 1  # integers beyond this are no count, size or seed a sweep can use
MAX_NAME = 100  # a run directory's name; Tune and the filesystem append to it


def _check(cond: bool, key: str, why: str) -> None:
    if not cond:
        raise SpecError(f"'{key}' {why}")


def _validate_data(d: DataConfig) -> None:
    """The data section: source, sizes and split fractions."""
    _check(d.split_seed >= 0, "data.split_seed", "must be >= 0")
    if d.group_pattern:
        try:
            re.compile(d.group_pattern)
        except re.error as e:
            _check(False, "data.group_pattern", f"is not a valid regular expression ({e})")
    _check(d.classes is None or d.classes == "rafdb" or (isinstance(d.classes, list) and len(d.classes) >= 3)
           or (isinstance(d.classes, dict) and len(d.classes) >= 3), "data.classes",
           "must be null, rafdb, a list of at least 3 names or a mapping label -> name")
    named = d.classes if isinstance(d.classes, list) else list((d.classes or {}).values()) \
        if isinstance(d.classes, dict) else []
    _check(all(isinstance(n, (str, int)) and not isinstance(n, bool) and str(n).strip() for n in named),
           "data.classes", "names must be non-empty strings")
    _check(not SOURCES.get(d.source).needs_path or bool(d.path), "data.path", f"is required for source '{d.source}'")
    _check(16 <= d.image_size <= 512, "data.image_size", "must be between 16 and 512")
    for key in ("train_fraction", "correct_fraction", "val_fraction"):
        _check(0 < getattr(d, key) < 1, f"data.{key}", "must be between 0 and 1")
    _check(d.train_fraction + d.correct_fraction < 1, "data.correct_fraction",
           "plus data.train_fraction must leave a test share (sum < 1)")
    _check(d.max_per_class is None or d.max_per_class >= 4, "data.max_per_class", "must be >= 4")


def _validate_base_net(b: BaseNetConfig) -> None:
    """The base net's training settings; the net's own are its family's (see `nets`)."""
    NETS.get(b.arch).check_args(b.arch, b.init_args)
    _check(b.epochs >= 1, "base_net.epochs", "must be >= 1")
    _check(b.patience >= 1, "base_net.patience", "must be >= 1")
    _check(0 <= b.min_epochs <= b.epochs, "base_net.min_epochs", "must be between 0 and base_net.epochs")
    _check(b.batch_size >= 2, "base_net.batch_size", "must be >= 2")
    _check(b.lr > 0, "base_net.lr", "must be > 0")
    _check(b.weight_decay >= 0, "base_net.weight_decay", "must be >= 0")
    _check(b.warmup_epochs >= 0, "base_net.warmup_epochs", "must be >= 0")
    _check(b.grad_clip >= 0, "base_net.grad_clip", "must be >= 0")
    _check(0 <= b.label_smoothing < 1, "base_net.label_smoothing", "must be in [0, 1)")
    _check(b.val_window >= 1, "base_net.val_window", "must be >= 1")
    _check(b.device in ("auto", "cpu", "cuda"), "base_net.device", "must be auto, cpu or cuda")
    _check(b.precision in ("auto", "fp32", "bf16"), "base_net.precision", "must be auto, fp32 or bf16")
    _check(b.schedule in SCHEDULES, "base_net.schedule", f"must be one of {', '.join(SCHEDULES)}")
    _check(0 <= b.ema_decay < 1, "base_net.ema_decay", "must be in [0, 1), e.g. 0.999 (0 disables it)")
    for key in ("mixup_alpha", "cutmix_alpha"):
        _check(getattr(b, key) >= 0, f"base_net.{key}", "must be >= 0 (0 disables it)")
    _check(0 <= b.mix_probability <= 1, "base_net.mix_probability", "must be in [0, 1]")
    _check(b.randaugment_ops >= 0, "base_net.randaugment_ops", "must be >= 0 (0 disables RandAugment)")
    _check(0 <= b.randaugment_magnitude <= 30, "base_net.randaugment_magnitude", "must be between 0 and 30")
    if b.weights is not None:
        _check_template(b.weights)


WEIGHTS_FIELDS = ("excluded", "excluded_name", "fold", "seed")  # what base_net.weights may name


def _check_template(template: str) -> None:
    """base_net.weights: a non-empty path whose {fields} are among WEIGHTS_FIELDS."""
    _check(isinstance(template, str) and bool(template.strip()), "base_net.weights",
           "must be a path template, e.g. ckpt/resnet18_without{excluded}.pth")
    try:
        named = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise SpecError(f"'base_net.weights' {template!r} is not a path template ({e}); "
                        "write {{ and }} for literal braces") from None
    unknown = [n for n in named if n not in WEIGHTS_FIELDS]
    _check(not unknown, "base_net.weights", f"names {{{unknown[0] if unknown else ''}}}; it may name "
           + ", ".join(f"{{{f}}}" for f in WEIGHTS_FIELDS) + " (write {{ and }} for literal braces)")


def _validate_corrector(c: CorrectorConfig) -> None:
    """The corrector's search: budget, objective, policies, projection and kinds."""
    _check(c.n_candidates >= 1, "corrector.n_candidates", "must be >= 1")
    _check(c.workers >= 1, "corrector.workers", "must be >= 1")
    _check(c.cv_splits >= 2, "corrector.cv_splits", "must be >= 2")
    _check(c.objective in OBJECTIVES, "corrector.objective", f"must be one of {', '.join(OBJECTIVES)}")
    _check(c.max_harm is None or 0 < c.max_harm < 1, "corrector.max_harm", "must be in (0, 1), e.g. 0.05")
    _check(0 < c.confidence < 1, "corrector.confidence", "must be in (0, 1), e.g. 0.9")
    _check(c.harm_measure in HARM_MEASURES, "corrector.harm_measure", f"must be one of {', '.join(HARM_MEASURES)}")
    _check(0 < c.calibration_fraction < 1, "corrector.calibration_fraction", "must be in (0, 1), e.g. 0.3")
    _check(c.objective != "gain_at_harm" or c.max_harm is not None, "corrector.max_harm",
           "must be set for the gain_at_harm objective (the largest Harm a candidate may have)")
    _check(bool(c.policies) and set(c.policies) <= set(POLICIES), "corrector.policies",
           f"must be a non-empty subset of {', '.join(POLICIES)}")
    _check(c.tau_grid >= 2, "corrector.tau_grid", "must be >= 2")
    _check(c.device in ("auto", "cpu", "cuda"), "corrector.device", "must be auto, cpu or cuda")
    _check(len(set(c.kinds)) == len(c.kinds), "corrector.kinds", "must list distinct kinds")
    _check(not c.kinds or c.kind in c.kinds, "corrector.kinds", f"must include corrector.kind ({c.kind}), the kind "
           "published as the fold's corrector; set corrector.kind to one of them")


def _validate_run(spec: Spec) -> None:
    """What the sweep runs and where: folds, seeds, resources, Tune search, tracking."""
    r = spec.resources
    _check(all((isinstance(x, int) and not isinstance(x, bool) and x >= 0) or (isinstance(x, str) and x.strip())
               for x in spec.folds), "folds", "must list class labels or names, 'all' and/or 'none'")
    _check(bool(spec.folds), "folds", "must not be empty")
    _check(bool(spec.seeds), "seeds", "must not be empty")
    _check(r.cpus_per_trial > 0, "resources.cpus_per_trial", "must be > 0")
    _check(r.gpus_per_trial >= 0, "resources.gpus_per_trial", "must be >= 0")
    _check(r.max_concurrent is None or r.max_concurrent >= 1, "resources.max_concurrent", "must be >= 1")
    _check(r.max_failures >= 0, "resources.max_failures", "must be >= 0")
    _check(spec.num_samples >= 1, "num_samples", "must be >= 1")
    _check(set(spec.tracking) <= {"mlflow", "wandb"} and all(isinstance(v, str) and v for v in spec.tracking.values()),
           "tracking", "may only map mlflow to a tracking URI and wandb to a project name")
    for key, space in spec.search.items():
        _check(_searchable(spec.base_net, key), f"search.{key}",
               "must name a base_net field or a setting of the net's family, e.g. base_net.lr or base_net.paper.heads")
        _check(isinstance(space, dict) and len(space) == 1 and next(iter(space)) in SEARCH_SPACES
               and isinstance(next(iter(space.values())), list), f"search.{key}",
               f"must be one mapping such as {{loguniform: [1e-4, 1e-2]}}; kinds: {', '.join(SEARCH_SPACES)}")
        _check_space(f"search.{key}", *next(iter(space.items())))


def _check_space(key: str, kind: str, values: list) -> None:
    """A search space Tune can sample: values to choose from, or [low, high] with low < high (> 0 for a log)."""
    if kind in ("grid", "choice"):
        _check(len(values) >= 1, key, f"{kind} needs at least one value")
        return
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    _check(len(values) == 2 and numbers and values[0] < values[1] and (kind != "loguniform" or values[0] > 0),
           key, f"{kind} needs [low, high], two numbers with low < high" + (", both > 0" if kind == "loguniform" else
                                                                             "") + f", got {values}")


def _validate_scheduler(spec: Spec) -> None:
    """A scheduler compares the samples of one fold and seed: their validation sets are the same."""
    name = spec.scheduler.name
    if not name:
        return
    folds = [f for f in spec.folds if f != "all"]
    _check(len(spec.folds) == len(folds) == 1 and len(spec.seeds) == 1, "scheduler",
           f"{name} compares trials' validation accuracy, which only trials of one fold and one seed share; set "
           "one fold and one seed (e.g. --set \"folds=[none]\" --set \"seeds=[0]\") or scheduler.name=null")
    _check(bool(spec.search), "scheduler", f"{name} stops the weak samples of a base-net `search`, and the spec has "
           "none; add a search (e.g. search: {base_net.lr: {loguniform: [1e-4, 1e-2]}}) or set scheduler.name=null")
    SCHEDULERS.get(name, "scheduler.name").check_budget(spec.scheduler.settings[name], spec.base_net.epochs)


def _searchable(b: BaseNetConfig, key: str) -> bool:
    """Whether a `search` key names a base_net field or a setting of the net's family."""
    parts = key.split(".")
    if parts[0] != "base_net" or len(parts) not in (2, 3):
        return False
    if len(parts) == 2:
        return parts[1] in BaseNetConfig.__dataclass_fields__ and parts[1] != "settings"
    return parts[1] == b.arch and parts[2] in type(b.settings[b.arch]).__dataclass_fields__


def _validate_features(spec: Spec) -> None:
    """The taps saved (which taps a net has, and which the detectors read, is checked once it is built)."""
    f = spec.features
    _check(f.taps is None or (bool(f.taps) and len(set(f.taps)) == len(f.taps)), "features.taps",
           "must be null (the net's defaults) or a non-empty list of distinct taps")
    _check(f.batch_size >= 1, "features.batch_size", "must be >= 1")
    _check(len(set(spec.detectors.names)) == len(spec.detectors.names), "detectors.names",
           "must list distinct detectors")


def _validate_report(r: ReportConfig) -> None:
    """How collect states uncertainty."""
    _check(not isinstance(r.bootstrap, bool) and isinstance(r.bootstrap, int) and r.bootstrap >= 100,
           "report.bootstrap", f"must be an integer >= 100 (resamples), got {r.bootstrap!r}")
    _check(not isinstance(r.level, bool) and 0.5 < r.level < 1, "report.level",
           f"must be a number in (0.5, 1), e.g. 0.95, got {r.level!r}")


PLUGIN_SECTIONS = ("data", "base_net", "corrector", "detectors", "scheduler")  # the spec's sections that hold plug-ins
SELECTORS = {DataConfig: "data.source", BaseNetConfig: "base_net.arch", CorrectorConfig: "corrector.kinds",
             SchedulerConfig: "scheduler.name"}


def _validate_plugins(section: Any, where: str) -> None:
    """Every plug-in the section uses resolves, each one's settings (given or default) are filled in, and
    each plug-in checks its own, whether or not this spec uses it."""
    name, registry = plugin_field(type(section))
    settings = getattr(section, name)
    key = SELECTORS.get(type(section), f"{where}.names")
    for used in section.in_use():
        plugin = registry.get(used, key if not (type(section) is CorrectorConfig and used == section.kind)
                              else "corrector.kind")
        settings.setdefault(used, plugin.Settings())
    for used, given in settings.items():
        registry.get(used, f"{where}.{used}").check(given)


def _validate_seeds(spec: Spec) -> None:
    """Training and sampler seeds: what numpy's and torch's generators take, each seed run once."""
    for key, seeds in (("seeds", spec.seeds), ("corrector.seed", [spec.corrector.seed])):
        _check(all(0 <= s <= MAX_INT for s in seeds), key, f"must be between 0 and {MAX_INT}")
    _check(len(set(spec.seeds)) == len(spec.seeds), "seeds", "must be distinct (a repeated seed reruns the same trial)")


def validate(spec: Spec) -> Spec:
    """`spec` itself when every field holds a possible value; else a SpecError naming the first bad key."""
    _check(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", spec.name) is not None and len(spec.name) <= MAX_NAME,
           "name", f"must be a folder name of at most {MAX_NAME} letters, digits, '.', '_' or '-' "
           "(not starting with '.'), e.g. ferplus-48px")
    _validate_seeds(spec)
    for where in PLUGIN_SECTIONS:
        _validate_plugins(getattr(spec, where), where)
    _validate_data(spec.data)
    _validate_base_net(spec.base_net)
    _validate_corrector(spec.corrector)
    _validate_run(spec)
    _validate_scheduler(spec)
    _validate_features(spec)
    _validate_report(spec.report)
    return spec
