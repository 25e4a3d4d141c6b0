"""The sweep spec: a YAML file parsed into typed, documented dataclasses.

Every field has a default that reproduces the published method, so a spec only names what it
changes. Unknown keys and impossible values are rejected with one line naming the key, because a
typo in a sweep spec otherwise silently runs the default for hours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from correctsweep.errors import SpecError

OBJECTIVES = ("balanced_accuracy", "macro_f1", "gain_at_harm")
POLICIES = ("override", "new_class")
SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")  # Tune's names, see sweep.search_space


@dataclass
class DataConfig:
    source: str = "synthetic"
    """Where images come from (see `sources`): synthetic (generated, no download), parquet, rafdb, fer2013,
    folder, cifar10, cifar100."""
    path: str | None = None
    """File or folder of the dataset (unused for synthetic). Relative paths resolve from the cwd."""
    image_size: int = 100
    """Images are resized to image_size x image_size before they reach the net (match the data's native
    size: 48 for FER2013/FER+/CK+48, 100 for RAF-DB, 32 for CIFAR)."""
    classes: Any = None
    """The classes' names: null (the source's own: folder names, CIFAR's meta file, a label_name column, or
    the labels themselves), 'rafdb' (the emotion sets' 1 Surprise ... 7 Neutral), a list naming the sorted
    labels in order, or a mapping label -> name."""
    n_images: int = 4000
    """synthetic only: number of images generated (class frequencies follow RAF-DB basic)."""
    split_seed: int = 0
    """Seed of the stratified train/correct/test split (and of the synthetic generator)."""
    train_fraction: float = 0.5
    """Share of the data for the base net (its validation part is carved out of it)."""
    correct_fraction: float = 0.25
    """Share of the data for fitting the corrector; the rest is `test`."""
    val_fraction: float = 0.1
    """Share of `train` held out (stratified) for the base net's early stopping."""
    use_split_column: bool = False
    """Use the dataset's own split column (train/valid/test) instead of a random split: train -> train,
    valid -> correct, test -> test; a set without valid (CIFAR) has correct carved out of train."""
    group_pattern: str | None = None
    """Regex applied to each sample id; its first group is a group key (e.g. a subject) that
    never straddles two splits. Example for CK+: '(S\\d+)_'."""
    max_per_class: int | None = None
    """Keep at most this many images per class (seeded), for quick runs on large sets."""
    skip_corrupt: bool = False
    """Skip (count and report) images that fail to decode instead of stopping with an error."""
    cache_dir: str | None = None
    """Where decoded images are cached; default <storage>/.cache."""


@dataclass
class BaseNetConfig:
    arch: str = "paper"
    """The net f: paper (the published CNN -> LSTM -> attention) or any torchvision classification model,
    e.g. resnet18, mobilenet_v3_small, efficientnet_b0 (built with weights=None: nothing is downloaded)."""
    module: str | None = None
    """A user's own nn.Module instead of `arch`: "package.module:Class", built as Class(num_classes=K,
    **init_args); it maps images [B, 3, H, W] scaled to [-1, 1] to logits [B, K]."""
    init_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for a torchvision model's or `module`'s constructor."""
    epochs: int = 40
    """Maximum training epochs."""
    patience: int = 8
    """Stop after this many epochs without a better (smoothed) validation accuracy."""
    min_epochs: int = 0
    """Early stopping never ends training before this epoch: a net still on its initial loss plateau
    has a noisy validation score whose early peak would otherwise stop it before it learns."""
    batch_size: int = 64
    """Mini-batch size for training."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_epochs: int = 1
    """Linear learning-rate warm-up before the cosine decay; stabilises the LSTM's first steps."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0 disables); guards the LSTM against blow-ups."""
    heads: int = 4
    """paper only: attention heads (must divide 128)."""
    dropout: float = 0.5
    """paper only: dropout before the last linear layer."""
    augment: bool = False
    """Departs from the paper: per-image random shifts of up to 1/12 of the side (zero padded) and
    horizontal flips during training, against the overfitting seen on real faces."""
    label_smoothing: float = 0.0
    """Departs from the paper when > 0: label smoothing of the weighted cross-entropy."""
    val_window: int = 1
    """Early stopping compares the mean validation accuracy over this many last epochs."""
    device: str = "auto"
    """auto (cuda when present), cpu or cuda."""
    precision: str = "auto"
    """Training arithmetic: fp32, bf16 (autocast; the LSTM stays fp32) or auto, which is bf16 on a GPU and
    fp32 on the CPU. Features are always extracted in fp32."""
    channels_last: bool = True
    """Conv layers in channels-last (NHWC) memory format: the same fp32 math, faster on CPU and GPU; false for
    a user net whose forward needs contiguous NCHW tensors (e.g. x.view on a conv map)."""
    threads: int | None = None
    """torch CPU threads (default: the trial's CPUs)."""


@dataclass
class FeaturesConfig:
    taps: list[str] | None = None
    """Representations saved per image. null: the net's defaults, for the paper net all of conv, lstm, attn,
    attn_weights, fc, logits, softmax; for other nets the layer before the classifier and the logits. Other
    nets' taps are graph nodes (`correctsweep taps SPEC` lists them), plus logits and softmax."""
    full: bool = False
    """Also store the full maps of the sequence taps (large) next to the pooled summaries."""
    batch_size: int = 256
    """Batch size for the extraction pass."""


@dataclass
class CorrectorConfig:
    kind: str = "xgboost"
    """The corrector family published as the fold's corrector: xgboost (gradient-boosted trees), fisher
    (one-vs-rest Fisher discriminants on whitened taps, the stochastic-separation corrector) or logistic
    (multinomial logistic regression on whitened taps)."""
    kinds: list[str] = field(default_factory=list)
    """Families run side by side on the same features, each with its own search, and compared in the
    report's methods table, e.g. [xgboost, fisher, logistic]; must include `kind`. Empty: `kind` alone."""
    n_candidates: int = 40
    """Candidates (Optuna trials) per fold and kind, each one cross-validated configuration."""
    timeout_s: float | None = None
    """Stop the search after this many seconds (finished trials are kept)."""
    cv_splits: int = 3
    """Stratified CV splits inside `correct` that score each candidate."""
    objective: str = "balanced_accuracy"
    """What the search maximises for h: balanced_accuracy, macro_f1 or gain_at_harm."""
    harm_bound: float = 0.05
    """gain_at_harm only: the largest mean Harm a candidate may have."""
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    """Decision policies searched: override and/or new_class."""
    tune_taps: bool = True
    """Let Optuna choose which taps feed the corrector (otherwise all saved taps)."""
    pca_dims: Any = None
    """xgboost only. Compact embeddings: project the chosen taps (standardised) onto this many whitened
    principal components fitted on `correct` only, before XGBoost sees them. null = full width; a list
    lets the search choose among its entries (null allowed), e.g. [null, 32, 64]."""
    whiten_dims: Any = None
    """fisher and logistic only: the whitened principal components (fitted on `correct`) they see. null:
    the search picks 4 to 128 (log scale); an integer fixes it; a list lets the search choose among its
    entries. Components without variance on `correct` are dropped."""
    tau_grid: int = 41
    """Number of thresholds scanned in [0, 1) on each candidate's out-of-fold probabilities."""
    max_rounds: int = 400
    """xgboost only: upper bound on boosting rounds; early stopping picks the number actually used."""
    early_stopping_rounds: int = 20
    """xgboost only: stop boosting after this many rounds without a better validation log-loss."""
    device: str = "auto"
    """xgboost only: auto (cuda when present), cpu or cuda (the other kinds run on the CPU)."""
    threads: int | None = None
    """XGBoost threads (default: the trial's CPUs)."""
    workers: int = 1
    """Optuna workers searching one fold's study at once, sharing its journal and the search's threads
    (corrector.threads or the trial's CPUs, split evenly, at least 1 each): Ray tasks on the trial's node in
    a sweep, processes under `correctsweep trial`. 1 is the sequential, reproducible search; with more, the
    order in which candidates finish, and so the candidates proposed, is not deterministic."""
    seed: int = 0
    """Seed of the TPE sampler and of the CV split."""

    @property
    def all_kinds(self) -> list[str]:
        """The kinds each fold runs, in the report's order: `kinds`, or `kind` alone."""
        return list(self.kinds) or [self.kind]


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 2
    """CPUs Ray reserves for each trial."""
    gpus_per_trial: float = 0
    """GPU share per trial (fractions let several small base nets share a GPU)."""
    max_concurrent: int | None = None
    """Cap on trials running at once (default: as many as resources allow)."""
    max_failures: int = 1
    """Times Ray retries a failed trial."""


@dataclass
class ReportConfig:
    """How collect states the uncertainty of its figures (spec section `report`); checked by `stats.check`."""

    bootstrap: int = 1000
    """Resamples of the stratified bootstrap over the test images behind every interval (at least 100:
    with fewer, the 2.5 % and 97.5 % quantiles rest on two or three resamples each)."""
    level: float = 0.95
    """Confidence level of the bootstrap and seed intervals, in (0.5, 1); the paired tests flag a
    difference at 1 - level."""


@dataclass
class Spec:
    name: str = "default"
    """Name of the run; results go to <storage>/<name>/."""
    storage: str = "outputs"
    """Root of run directories: a local path, a shared filesystem path or a URI (s3://, gs://)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset and its split."""
    folds: list[Any] = field(default_factory=lambda: ["all", "none"])
    """Excluded classes to run: class labels or names, 'all' (every class) and/or 'none' (the full model)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds; every fold runs once per seed."""
    base_net: BaseNetConfig = field(default_factory=BaseNetConfig)
    """The base net f and its training."""
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    """Which latent representations are written to Parquet."""
    corrector: CorrectorConfig = field(default_factory=CorrectorConfig)
    """The corrector (one or several kinds) and its Optuna search."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """What Ray gives each trial."""
    search: dict[str, Any] = field(default_factory=dict)
    """Base-net hyperparameters searched by Tune, e.g. {'base_net.lr': {'loguniform': [1e-4, 1e-2]}}."""
    num_samples: int = 1
    """Samples drawn from `search` per fold and seed."""
    tracking: dict[str, str] = field(default_factory=dict)
    """Optional experiment tracking through Tune's callbacks: {mlflow: TRACKING_URI} and/or
    {wandb: PROJECT}, e.g. {mlflow: "sqlite:///outputs/mlflow.db"}. Needs the `tracking` install extra."""
    baselines: list[str] = field(default_factory=list)
    """Label-free detectors of the unseen class (pytorch-ood's) run beside the corrector in folds with an
    excluded class, as baselines for the new_class policy (see `baselines`): msp, energy, maxlogit, entropy,
    gen, klmatching (from f's logits), mahalanobis, rmd, knn (on `baselines_tap`), vim, dice, react, she, nci,
    fdbd (on f's features and final layer). Each flags the excluded class above a threshold chosen on `correct`."""
    baselines_tap: str | None = None
    """The tap whose geometry mahalanobis, rmd and knn measure (one of features.taps); null: the layer before
    the net's classifier (fc for the paper net)."""
    report: ReportConfig = field(default_factory=ReportConfig)
    """The intervals and tests of collect's report."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def run_dir(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-able object: the key of a stage's cached output."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# Keys renamed for clarity: a spec with the old name gets a line naming the new one.
RENAMED = {"data.size": "data.n_images", "base_net.smoothing": "base_net.val_window",
           "corrector.n_trials": "corrector.n_candidates", "corrector.cv_folds": "corrector.cv_splits"}
# Keys whose values changed meaning too, so a stored spec cannot be renamed for them.
REPLACED = {"base_net.amp": "'base_net.precision' (auto: bf16 on a GPU; fp32 or bf16 everywhere)"}


def sweep_key(spec: Spec) -> str:
    """The sweep settings a result was made under, base-net settings aside (a `search` varies them) and the
    report's, which only collect reads (left out, not nulled: a result of an earlier spec keeps its key)."""
    settings = spec.to_dict() | {"base_net": None}
    del settings["report"]
    return digest(settings)


def from_mapping(cls: type, raw: Any, where: str, finite: bool = True) -> Any:
    """`raw` as the dataclass `cls`, nested dataclasses and types checked; a SpecError names the first
    unknown key or wrong type by its dotted path. `finite`: numbers must be finite (a spec's); a result's
    figures may be NaN, which is how an undefined ratio is stored."""
    if not isinstance(raw, dict):
        raise SpecError(f"'{where or 'spec'}' must be a mapping of keys, got {_shown(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if path in RENAMED:
            raise SpecError(f"'{path}' is now called '{RENAMED[path]}'; rename it in the spec or --set")
        if path in REPLACED:
            raise SpecError(f"'{path}' is replaced by {REPLACED[path]}; change it in the spec or --set")
        if key not in known:
            raise SpecError(f"unknown key '{path}'; known keys here: {', '.join(sorted(known))}")
        values[key] = _coerce(hints[key], value, path, finite)
    return cls(**values)


# Integers beyond this are no count, size or seed a sweep can use; numpy and torch would overflow on them.
MAX_INT = 2**32 - 1
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(value: Any) -> str:
    """A value as an error line shows it: its type and at most 60 characters of it."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _number(hint: type, value: Any, path: str, finite: bool = True) -> int | float:
    """An int or float field's value: a finite number in range. YAML 1.1 reads 5e-4 (no dot) as a
    string, so numeric text is converted, but only plain ASCII numbers (not 'inf', 'nan' or '1_0')."""
    if isinstance(value, str) and (_INT_TEXT if hint is int else _FLOAT_TEXT).fullmatch(value.strip()):
        value = hint(value.strip())
    if hint is float and isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT:
        value = float(value)
    if not isinstance(value, hint) or isinstance(value, bool):
        raise SpecError(f"'{path}' must be {'an integer' if hint is int else 'a number'}, got {_shown(value)}")
    return _scalar(value, path, finite)


def _scalar(value: Any, path: str, finite: bool = True) -> Any:
    """`value` itself when every number in it is finite and within MAX_INT; nested lists and mappings
    (the free-form fields: folds, pca_dims, search, ...) are checked throughout."""
    if isinstance(value, float) and not math.isfinite(value) and (finite or not math.isnan(value)):
        raise SpecError(f"'{path}' must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise SpecError(f"'{path}' must be at most {MAX_INT} in size, got {_shown(value)}")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _scalar(item, path, finite)
    return value


def _coerce(hint: Any, value: Any, path: str, finite: bool = True) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, path, finite)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(hint, value, path, finite)
    if origin is list:
        if isinstance(value, dict):
            raise SpecError(f"'{path}' must be a list (or one value), got {_shown(value)}")
        return [_coerce(args[0], v, path, finite) for v in (value if isinstance(value, list) else [value])]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"'{path}' must be a mapping of keys, got {_shown(value)}")
        return {_coerce(args[0], k, f"{path} key", finite): _coerce(args[1], v, f"{path}.{k}", finite)
                for k, v in value.items()}
    if hint is Any:
        return _scalar(value, path, finite)
    if hint in (int, float):
        return _number(hint, value, path, finite)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # YAML reads 007 as 7 and 1e3 as 1000.0: taking them as text would silently change them
        raise SpecError(f"'{path}' must be text, but YAML read it as the number {value!r}: quote the value")
    if isinstance(value, hint):
        return value
    raise SpecError(f"'{path}' must be {hint.__name__}, got {_shown(value)}")


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
    from correctsweep.sources import SOURCES

    _check(d.source in SOURCES, "data.source", f"must be one of {', '.join(SOURCES)}")
    _check(not SOURCES[d.source].needs_path or bool(d.path), "data.path", f"is required for source '{d.source}'")
    _check(d.classes is None or d.classes == "rafdb" or (isinstance(d.classes, list) and len(d.classes) >= 3)
           or (isinstance(d.classes, dict) and len(d.classes) >= 3), "data.classes",
           "must be null, rafdb, a list of at least 3 names or a mapping label -> name")
    named = d.classes if isinstance(d.classes, list) else list((d.classes or {}).values()) \
        if isinstance(d.classes, dict) else []
    _check(all(isinstance(n, (str, int)) and not isinstance(n, bool) and str(n).strip() for n in named),
           "data.classes", "names must be non-empty strings")
    _check(16 <= d.image_size <= 512, "data.image_size", "must be between 16 and 512")
    _check(d.n_images >= 50, "data.n_images", "must be at least 50")
    for key in ("train_fraction", "correct_fraction", "val_fraction"):
        _check(0 < getattr(d, key) < 1, f"data.{key}", "must be between 0 and 1")
    _check(d.train_fraction + d.correct_fraction < 1, "data.correct_fraction",
           "plus data.train_fraction must leave a test share (sum < 1)")
    _check(d.max_per_class is None or d.max_per_class >= 4, "data.max_per_class", "must be >= 4")


def _validate_base_net(b: BaseNetConfig) -> None:
    """The base net's training settings; the net's own are its family's (see `nets`)."""
    from correctsweep import nets

    _check(b.module is None or b.arch == "paper", "base_net.module", "replaces base_net.arch; set one of them")
    nets.check(b)
    _check(b.epochs >= 1, "base_net.epochs", "must be >= 1")
    _check(b.patience >= 1, "base_net.patience", "must be >= 1")
    _check(0 <= b.min_epochs <= b.epochs, "base_net.min_epochs", "must be between 0 and base_net.epochs")
    _check(b.batch_size >= 2, "base_net.batch_size", "must be >= 2")
    _check(b.lr > 0, "base_net.lr", "must be > 0")
    _check(b.weight_decay >= 0, "base_net.weight_decay", "must be >= 0")
    _check(b.warmup_epochs >= 0, "base_net.warmup_epochs", "must be >= 0")
    _check(b.grad_clip >= 0, "base_net.grad_clip", "must be >= 0")
    _check(0 <= b.dropout < 1, "base_net.dropout", "must be in [0, 1)")
    _check(0 <= b.label_smoothing < 1, "base_net.label_smoothing", "must be in [0, 1)")
    _check(b.val_window >= 1, "base_net.val_window", "must be >= 1")
    _check(b.device in ("auto", "cpu", "cuda"), "base_net.device", "must be auto, cpu or cuda")
    _check(b.precision in ("auto", "fp32", "bf16"), "base_net.precision", "must be auto, fp32 or bf16")


def _validate_corrector(c: CorrectorConfig) -> None:
    """The corrector's search: budget, objective, policies, projection and kinds."""
    _check(c.n_candidates >= 1, "corrector.n_candidates", "must be >= 1")
    _check(c.workers >= 1, "corrector.workers", "must be >= 1")
    _check(c.cv_splits >= 2, "corrector.cv_splits", "must be >= 2")
    _check(c.objective in OBJECTIVES, "corrector.objective", f"must be one of {', '.join(OBJECTIVES)}")
    _check(0 <= c.harm_bound <= 1, "corrector.harm_bound", "must be in [0, 1]")
    _check(bool(c.policies) and set(c.policies) <= set(POLICIES), "corrector.policies",
           f"must be a non-empty subset of {', '.join(POLICIES)}")
    _check(c.tau_grid >= 2, "corrector.tau_grid", "must be >= 2")
    from correctsweep.kinds import KINDS

    _check(c.kind in KINDS, "corrector.kind", f"must be one of {', '.join(KINDS)}")
    _check(set(c.kinds) <= set(KINDS) and len(set(c.kinds)) == len(c.kinds), "corrector.kinds",
           f"must list distinct kinds among {', '.join(KINDS)}")
    _check(not c.kinds or c.kind in c.kinds, "corrector.kinds", f"must include corrector.kind ({c.kind}), the kind "
           "published as the fold's corrector; set corrector.kind to one of them")
    for kind in KINDS.values():  # each kind's own settings, whether or not this spec runs it
        kind.check(c)


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
        _check(key.startswith("base_net.") and key.split(".", 1)[1] in BaseNetConfig.__dataclass_fields__,
               f"search.{key}", "must name a base_net field, e.g. base_net.lr")
        _check(isinstance(space, dict) and len(space) == 1 and next(iter(space)) in SEARCH_SPACES
               and isinstance(next(iter(space.values())), list), f"search.{key}",
               f"must be one mapping such as {{loguniform: [1e-4, 1e-2]}}; kinds: {', '.join(SEARCH_SPACES)}")


def _validate_features(spec: Spec) -> None:
    """The taps saved and the detectors that read them (which taps a net has is checked once it is built)."""
    from correctsweep import baselines

    f = spec.features
    _check(f.taps is None or (bool(f.taps) and len(set(f.taps)) == len(f.taps)), "features.taps",
           "must be null (the net's defaults) or a non-empty list of distinct taps")
    _check(f.batch_size >= 1, "features.batch_size", "must be >= 1")
    _check(set(spec.baselines) <= set(baselines.DETECTORS) and len(set(spec.baselines)) == len(spec.baselines),
           "baselines", f"must list distinct detectors among {', '.join(baselines.DETECTORS)}")


MAX_NAME = 100  # a run directory's name; Tune and the filesystem append to it


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
    _validate_data(spec.data)
    _validate_base_net(spec.base_net)
    _validate_corrector(spec.corrector)
    _validate_run(spec)
    _validate_features(spec)
    from correctsweep import stats

    stats.check(spec.report)
    return spec


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a spec would otherwise go silently wrong: a key given
    twice is an error (PyYAML keeps the last), and dates stay text (a name such as 2024-01-01)."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _mapping(loader: _SpecLoader, node: yaml.MappingNode):
    data = {}
    yield data  # as SafeLoader does, so an anchored mapping can be referred to inside itself
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden: not a repeat
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, typing.Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice",
                                                        key_node.start_mark)
            seen.add(key)
    data.update(loader.construct_mapping(node))


_SpecLoader.add_constructor("tag:yaml.org,2002:map", _mapping)

# the sections every spec.yaml the tool wrote holds (SPEC §4), since its first version
STORED_KEYS = ("name", "storage", "data", "folds", "seeds", "base_net", "features", "corrector", "resources")
MAX_SPEC_BYTES = 1 << 20  # a spec is a few kB
MAX_NODES = 10_000  # values in a spec once its aliases are expanded (a spec has a few hundred)


def _check_size(value: Any) -> None:
    """Walk `value` with its aliases expanded, stopping once more than MAX_NODES were seen: a few
    hundred bytes of nested aliases ("billion laughs") otherwise expand to gigabytes downstream."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise SpecError(f"the spec expands to more than {MAX_NODES} values (YAML aliases nested inside "
                            "each other?); write the values out")
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item


def _yaml(text: str) -> Any:
    """`text` parsed with the spec loader, bounded in size; YAMLError on bad YAML or a repeated key."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {len(text)} characters long, more than a spec needs ({MAX_SPEC_BYTES}); "
                        "pass a sweep spec such as sweeps/default.yaml")
    try:
        value = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (_SpecLoader is a SafeLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    _check_size(value)
    return value


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in a few words, with the line it is on."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        return f"{e.problem} (line {e.problem_mark.line + 1})"
    return str(e).splitlines()[0]


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SpecError(f"--set '{text}' must look like key=value, e.g. data.path=/x")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), _yaml(value)
    except yaml.YAMLError as e:
        raise SpecError(f"--set {text}: the value is not valid YAML ({_yaml_problem(e)}); "
                        "quote text, e.g. --set \"data.path='[x'\"") from None


def spec_from_dict(raw: dict[str, Any], overrides: list[str] = ()) -> Spec:
    raw = json.loads(json.dumps(raw))  # deep copy; overrides must not leak into the caller's dict
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
    return validate(from_mapping(Spec, raw, ""))


def load_spec(path: str | Path, overrides: list[str] = (), stored: bool = False) -> Spec:
    """The spec in a YAML file. `stored`: a run directory's spec.yaml, which this tool wrote itself,
    so keys renamed since are carried over rather than refused (a user's spec gets the error), and
    one that is not a whole spec is refused rather than read as the default spec."""
    path = Path(path)
    what = f"the run's spec file '{path}'" if stored else f"spec file '{path}'"
    fix = "rerun one trial of the run's spec (`correctsweep trial SPEC --fold J`) to rewrite it" if stored else \
        "pass a YAML file such as sweeps/default.yaml"
    if not path.is_file():
        raise SpecError(f"{what} not found; {fix}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{what} is {path.stat().st_size} bytes, more than a spec needs; {fix}")
    try:
        raw = _yaml(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise SpecError(f"{what} is not text; {fix}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{what} is not valid YAML: {_yaml_problem(e)}; {fix}") from None
    except SpecError as e:
        raise SpecError(f"{what}: {e}") from None
    if raw is None and not stored:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{what} must be a mapping of keys (name:, data:, ...), not {_shown(raw)}; {fix}")
    if not stored:
        return spec_from_dict(raw, overrides)
    # the tool writes every section, so a missing one means a damaged file, not the default's value
    missing = [key for key in STORED_KEYS if key not in raw]
    if missing:
        raise SpecError(f"{what} lacks {', '.join(missing)}, so it is not the spec the run was made with; {fix}")
    for old, new in RENAMED.items():
        (section, old_key), new_key = old.split("."), new.split(".")[1]
        if isinstance(raw.get(section), dict) and old_key in raw[section]:
            raw[section][new_key] = raw[section].pop(old_key)
    try:
        return spec_from_dict(raw, overrides)
    except SpecError as e:
        raise SpecError(f"{what}: {e}; {fix}") from None
