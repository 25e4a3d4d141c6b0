"""The sweep spec: a YAML file parsed into typed, documented dataclasses.

Every field has a default that reproduces the published method, so a spec only names what it
changes. Unknown keys and impossible values are rejected with one line naming the key, because a
typo in a sweep spec otherwise silently runs the default for hours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from correctsweep.errors import SpecError

ALL_TAPS = ("conv", "lstm", "attn", "attn_weights", "fc", "logits", "softmax")
SOURCES = ("synthetic", "parquet", "rafdb", "fer2013", "folder")
OBJECTIVES = ("balanced_accuracy", "macro_f1", "gain_at_harm")
POLICIES = ("override", "new_class")
SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")  # Tune's names, see sweep.search_space


@dataclass
class DataConfig:
    source: str = "synthetic"
    """Where images come from: synthetic (generated, no download), parquet, rafdb, fer2013, folder."""
    path: str | None = None
    """File or folder of the dataset (unused for synthetic). Relative paths resolve from the cwd."""
    image_size: int = 100
    """Images are resized to image_size x image_size before they reach the net."""
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
    """Use the dataset's own split column (train/valid/test) instead of a random split:
    train -> train, valid -> correct, test -> test."""
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
    """Attention heads (must divide 128)."""
    dropout: float = 0.5
    """Dropout before the last linear layer."""
    augment: bool = False
    """Departs from the paper: per-image random shifts of up to 1/12 of the side (zero padded) and
    horizontal flips during training, against the overfitting seen on real faces."""
    label_smoothing: float = 0.0
    """Departs from the paper when > 0: label smoothing of the weighted cross-entropy."""
    val_window: int = 1
    """Early stopping compares the mean validation accuracy over this many last epochs."""
    device: str = "auto"
    """auto (cuda when present), cpu or cuda."""
    amp: bool = True
    """Mixed precision (bf16) on the GPU; ignored on the CPU."""
    threads: int | None = None
    """torch CPU threads (default: the trial's CPUs)."""


@dataclass
class FeaturesConfig:
    taps: list[str] = field(default_factory=lambda: list(ALL_TAPS))
    """Representations saved per image: conv, lstm, attn, attn_weights, fc, logits, softmax."""
    full: bool = False
    """Also store the full maps of the sequence taps (large) next to the pooled summaries."""
    batch_size: int = 256
    """Batch size for the extraction pass."""


@dataclass
class CorrectorConfig:
    n_trials: int = 40
    """Optuna trials per fold (each is one cross-validated XGBoost candidate)."""
    timeout_s: float | None = None
    """Stop the search after this many seconds (finished trials are kept)."""
    cv_folds: int = 3
    """Stratified k-fold inside `correct` used to score each candidate."""
    objective: str = "balanced_accuracy"
    """What the search maximises for h: balanced_accuracy, macro_f1 or gain_at_harm."""
    harm_bound: float = 0.05
    """gain_at_harm only: the largest mean Harm a candidate may have."""
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    """Decision policies searched: override and/or new_class."""
    tune_taps: bool = True
    """Let Optuna choose which taps feed XGBoost (otherwise all saved taps)."""
    pca_dims: Any = None
    """Compact embeddings: project the chosen taps (standardised) onto this many whitened principal
    components fitted on `correct` only, before XGBoost sees them. null = full width; a list lets
    the search choose among its entries (null allowed), e.g. [null, 32, 64]."""
    tau_grid: int = 41
    """Number of thresholds scanned in [0, 1) on each candidate's out-of-fold probabilities."""
    max_rounds: int = 400
    """Upper bound on boosting rounds; early stopping picks the number actually used."""
    early_stopping_rounds: int = 20
    """Stop boosting after this many rounds without a better validation log-loss."""
    device: str = "auto"
    """auto (cuda when present), cpu or cuda."""
    threads: int | None = None
    """XGBoost threads (default: the trial's CPUs)."""
    seed: int = 0
    """Seed of the TPE sampler and of the CV split."""


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
class Spec:
    name: str = "default"
    """Name of the run; results go to <storage>/<name>/."""
    storage: str = "outputs"
    """Root of run directories: a local path, a shared filesystem path or a URI (s3://, gs://)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset and its split."""
    folds: list[Any] = field(default_factory=lambda: ["all", "none"])
    """Excluded classes to run: class labels, 'all' (every class) and/or 'none' (the full model)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds; every fold runs once per seed."""
    base_net: BaseNetConfig = field(default_factory=BaseNetConfig)
    """The CNN -> LSTM -> attention base net and its training."""
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    """Which latent representations are written to Parquet."""
    corrector: CorrectorConfig = field(default_factory=CorrectorConfig)
    """The XGBoost corrector and its Optuna search."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """What Ray gives each trial."""
    search: dict[str, Any] = field(default_factory=dict)
    """Base-net hyperparameters searched by Tune, e.g. {'base_net.lr': {'loguniform': [1e-4, 1e-2]}}."""
    num_samples: int = 1
    """Samples drawn from `search` per fold and seed."""
    tracking: dict[str, str] = field(default_factory=dict)
    """Optional experiment tracking through Tune's callbacks: {mlflow: TRACKING_URI} and/or
    {wandb: PROJECT}, e.g. {mlflow: "sqlite:///outputs/mlflow.db"}. Needs the `tracking` install extra."""

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
RENAMED = {"data.size": "data.n_images", "base_net.smoothing": "base_net.val_window"}


def _from_dict(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise SpecError(f"'{where or 'spec'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if path in RENAMED:
            raise SpecError(f"'{path}' is now called '{RENAMED[path]}'; rename it in the spec or --set")
        if key not in known:
            raise SpecError(f"unknown key '{path}'; known keys here: {', '.join(sorted(known))}")
        values[key] = _coerce(hints[key], value, path)
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, path) for v in value]
    if hint is Any or origin is dict:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise SpecError(f"'{path}' must be {hint.__name__}, got {value!r}")


def _check(cond: bool, key: str, why: str) -> None:
    if not cond:
        raise SpecError(f"'{key}' {why}")


def validate(spec: Spec) -> Spec:
    d, b, f, c, r = spec.data, spec.base_net, spec.features, spec.corrector, spec.resources
    _check(bool(spec.name) and "/" not in spec.name, "name", "must be a non-empty name without '/'")
    _check(d.source in SOURCES, "data.source", f"must be one of {', '.join(SOURCES)}")
    _check(d.source == "synthetic" or bool(d.path), "data.path", f"is required for source '{d.source}'")
    _check(16 <= d.image_size <= 512, "data.image_size", "must be between 16 and 512")
    _check(d.n_images >= 50, "data.n_images", "must be at least 50")
    for key in ("train_fraction", "correct_fraction", "val_fraction"):
        _check(0 < getattr(d, key) < 1, f"data.{key}", "must be between 0 and 1")
    _check(d.train_fraction + d.correct_fraction < 1, "data.correct_fraction",
           "plus data.train_fraction must leave a test share (sum < 1)")
    _check(d.max_per_class is None or d.max_per_class >= 4, "data.max_per_class", "must be >= 4")
    _check(all(x == "none" or x == "all" or (isinstance(x, int) and x >= 0) for x in spec.folds),
           "folds", "must list class labels, 'all' and/or 'none'")
    _check(bool(spec.folds), "folds", "must not be empty")
    _check(bool(spec.seeds), "seeds", "must not be empty")
    _check(b.epochs >= 1, "base_net.epochs", "must be >= 1")
    _check(b.patience >= 1, "base_net.patience", "must be >= 1")
    _check(0 <= b.min_epochs <= b.epochs, "base_net.min_epochs", "must be between 0 and base_net.epochs")
    _check(b.batch_size >= 2, "base_net.batch_size", "must be >= 2")
    _check(b.lr > 0, "base_net.lr", "must be > 0")
    _check(b.weight_decay >= 0, "base_net.weight_decay", "must be >= 0")
    _check(b.warmup_epochs >= 0, "base_net.warmup_epochs", "must be >= 0")
    _check(b.grad_clip >= 0, "base_net.grad_clip", "must be >= 0")
    _check(b.heads >= 1 and 128 % b.heads == 0, "base_net.heads", "must divide 128 (1, 2, 4, 8, ...)")
    _check(0 <= b.dropout < 1, "base_net.dropout", "must be in [0, 1)")
    _check(0 <= b.label_smoothing < 1, "base_net.label_smoothing", "must be in [0, 1)")
    _check(b.val_window >= 1, "base_net.val_window", "must be >= 1")
    _check(b.device in ("auto", "cpu", "cuda"), "base_net.device", "must be auto, cpu or cuda")
    _check(bool(f.taps) and set(f.taps) <= set(ALL_TAPS), "features.taps",
           f"must be a non-empty subset of {', '.join(ALL_TAPS)}")
    _check(f.batch_size >= 1, "features.batch_size", "must be >= 1")
    _check(c.n_trials >= 1, "corrector.n_trials", "must be >= 1")
    _check(c.cv_folds >= 2, "corrector.cv_folds", "must be >= 2")
    _check(c.objective in OBJECTIVES, "corrector.objective", f"must be one of {', '.join(OBJECTIVES)}")
    _check(0 <= c.harm_bound <= 1, "corrector.harm_bound", "must be in [0, 1]")
    _check(bool(c.policies) and set(c.policies) <= set(POLICIES), "corrector.policies",
           f"must be a non-empty subset of {', '.join(POLICIES)}")
    dims = c.pca_dims if isinstance(c.pca_dims, list) else [c.pca_dims]
    _check(bool(dims) and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in dims),
           "corrector.pca_dims", "must be null, a positive integer or a list of them (null allowed), e.g. [null, 64]")
    _check(c.tau_grid >= 2, "corrector.tau_grid", "must be >= 2")
    _check(c.max_rounds >= 1, "corrector.max_rounds", "must be >= 1")
    _check(c.early_stopping_rounds >= 1, "corrector.early_stopping_rounds", "must be >= 1")
    _check(c.device in ("auto", "cpu", "cuda"), "corrector.device", "must be auto, cpu or cuda")
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
    return spec


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SpecError(f"--set '{text}' must look like key=value, e.g. data.path=/x")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


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
    return validate(_from_dict(Spec, raw, ""))


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file '{path}' not found; pass a YAML file such as sweeps/default.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"spec file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    return spec_from_dict(raw, overrides)
