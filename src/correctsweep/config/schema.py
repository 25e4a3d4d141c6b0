"""The sweep spec's schema: typed, documented dataclasses, one per section.

Every field has a default that reproduces the published method, so a spec only names what it
changes. A plug-in's own settings are not listed here: a section that chooses plug-ins (data.source,
base_net.arch, corrector.kind(s), detectors.names) holds each one's settings under its name, typed by
the plug-in's `Settings` dataclass (see `plugins`), e.g. `corrector: {kind: xgboost, xgboost: {max_rounds: 400}}`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import yaml

from correctsweep.plugins import DETECTORS, KINDS, NETS, SCHEDULERS, SOURCES, Registry

OBJECTIVES = ("balanced_accuracy", "macro_f1", "gain_at_harm")
POLICIES = ("override", "new_class")
SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")  # Tune's names, see sweep.search_space


@dataclass
class DataConfig:
    source: str = "synthetic"
    """Where images come from: a dataset source's name (`sources/`: synthetic, generated with no download, is
    the default) or a user's package.module:Class; its settings go under its name, e.g. data.synthetic."""
    path: str | None = None
    """File or folder of the dataset (unused for synthetic). Relative paths resolve from the cwd; ~ is your home."""
    image_size: int = 100
    """Images are resized to image_size x image_size before they reach the net (match the data's native
    size: 48 for FER2013/FER+/CK+48, 100 for RAF-DB, 32 for CIFAR)."""
    classes: Any = None
    """The classes' names: null (the source's own: folder names, CIFAR's meta file, a label_name column, or
    the labels themselves), 'rafdb' (the emotion sets' 1 Surprise ... 7 Neutral), a list naming the sorted
    labels in order, or a mapping label -> name."""
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
    settings: dict[str, Any] = field(default_factory=dict, metadata={"plugins": SOURCES})

    def in_use(self) -> list[str]:
        return [self.source]


@dataclass
class BaseNetConfig:
    arch: str = "paper"
    """The net f: paper (the published CNN -> LSTM -> attention), any torchvision classification model, e.g.
    resnet18, mobilenet_v3_small, efficientnet_b0 (built with weights=None: nothing is downloaded), a timm model
    as timm/<model name> (the `timm` extra; pretrained=False), or a user's own nn.Module as
    "package.module:Class", built as Class(num_classes=K, **init_args), mapping images [B, 3, H, W] scaled to
    [-1, 1] to logits [B, K]. The paper net's settings go under base_net.paper."""
    init_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for a torchvision or timm model's or a user's module's constructor."""
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
    augment: bool = False
    """Departs from the paper: per-image random shifts of up to 1/12 of the side (zero padded) and
    horizontal flips during training, against the overfitting seen on real faces."""
    label_smoothing: float = 0.0
    """Departs from the paper when > 0: label smoothing of the weighted cross-entropy."""
    schedule: str = "cosine"
    """Learning-rate schedule: cosine (linear warm-up over warmup_epochs, then a cosine decay to zero) or
    one_cycle (torch's OneCycleLR: from lr/25 up to lr over the first 30 % of the steps, then down to lr/2.5e5,
    AdamW's beta1 cycled between 0.95 and 0.85; warmup_epochs is unused)."""
    ema_decay: float = 0.0
    """Departs from the paper when > 0: an exponential moving average of the weights (and BatchNorm's running
    statistics), updated after every step with this decay, e.g. 0.999, warmed up as min(decay, (1 + n) / (10 + n))
    over the first n updates; each epoch's validation scores the average, and the saved net is the average.
    0 disables it."""
    mixup_alpha: float = 0.0
    """Departs from the paper when > 0: mixup, a batch blended with a shuffled copy of itself at a share drawn
    from Beta(alpha, alpha), the loss blended alike. 0 disables it."""
    cutmix_alpha: float = 0.0
    """Departs from the paper when > 0: cutmix, a box of a shuffled copy of the batch pasted in, its area drawn
    from Beta(alpha, alpha), the loss blended by area. With mixup_alpha too, each mixed batch uses one of the
    two, half the time each. 0 disables it."""
    mix_probability: float = 1.0
    """The share of batches that mixup or cutmix mixes (the others train unmixed)."""
    randaugment_ops: int = 0
    """Departs from the paper when > 0: RandAugment (torchvision.transforms.v2) with this many operations per
    image, after the shifts and flips of `augment`; each group of 8 images in a batch draws its own
    operations. 0 disables it."""
    randaugment_magnitude: int = 9
    """RandAugment's magnitude, 0 to 30."""
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
    weights: str | None = None
    """Trained weights to correct instead of training f: a path template of checkpoints (a state_dict, bare or
    under `state_dict` or `model`, `module.`/`model.` key prefixes allowed), loaded into `arch` with
    torch.load(weights_only=True). {excluded} is the fold's class label ('none' for the full model),
    {excluded_name} its name, {fold} and {seed} as the run directory spells them, e.g.
    ckpt/resnet18_without{excluded}.pth. The training settings are then unused; null: f is trained."""
    settings: dict[str, Any] = field(default_factory=dict, metadata={"plugins": NETS})

    def in_use(self) -> list[str]:
        return [self.arch]


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
    """The corrector kind published as the fold's corrector: xgboost (gradient-boosted trees), fisher
    (one-vs-rest Fisher discriminants on whitened taps, the stochastic-separation corrector), logistic
    (multinomial logistic regression on whitened taps) or a user's package.module:Class. Each kind's own
    settings go under its name, e.g. corrector.xgboost.max_rounds."""
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
    """What the search maximises for h: balanced_accuracy, macro_f1 or gain_at_harm (the excluded class's Gain, or
    the mean Gain in the full model, among the candidates whose Harm, by harm_measure, stays at most max_harm)."""
    max_harm: float | None = None
    """Certify tau: with probability at least `confidence`, h breaks at most this share of f's correct answers on
    new data (Harm by harm_measure), e.g. 0.05. A held-out part of `correct` (calibration_fraction) certifies
    it, the rest fits g; a fold where no tau certifies keeps h = f. null: tau is the search's, uncertified."""
    confidence: float = 0.9
    """max_harm only: the probability 1 - delta with which the bound holds, over the draw of the calibration rows."""
    harm_measure: str = "pooled"
    """Which Harm max_harm bounds: pooled (the share of all of f's correct answers h breaks), mean (the mean over
    classes of Harm_i, the paper's figure) or worst (the largest Harm_i). mean and worst need many calibration
    rows in every class."""
    calibration_fraction: float = 0.3
    """max_harm only: the share of `correct` (stratified by class) held out to certify tau; g and the detectors
    are fitted on the rest."""
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    """Decision policies searched: override and/or new_class."""
    tune_taps: bool = True
    """Let Optuna choose which taps feed the corrector (otherwise all saved taps)."""
    tau_grid: int = 41
    """Number of thresholds scanned in [0, 1) on each candidate's held-out probabilities (each row of
    `correct` predicted by the model of the CV split that held it out)."""
    device: str = "auto"
    """Where a kind that can use a GPU (xgboost) runs: auto (cuda when present), cpu or cuda; the others run
    on the CPU. A machine setting like base_net.device, which the sweep sets for trials given no GPU."""
    threads: int | None = None
    """The search's CPU threads (default: the trial's CPUs)."""
    workers: int = 1
    """Optuna workers searching one fold's study at once, sharing its journal and the search's threads
    (corrector.threads or the trial's CPUs, split evenly, at least 1 each): Ray tasks on the trial's node in
    a sweep, processes under `correctsweep trial`. 1 is the sequential, reproducible search; with more, the
    order in which candidates finish, and so the candidates proposed, is not deterministic."""
    seed: int = 0
    """Seed of the TPE sampler and of the CV split."""
    settings: dict[str, Any] = field(default_factory=dict, metadata={"plugins": KINDS})

    def in_use(self) -> list[str]:
        return self.all_kinds

    @property
    def all_kinds(self) -> list[str]:
        """The kinds each fold runs, in the report's order: `kinds`, or `kind` alone."""
        return list(self.kinds) or [self.kind]


@dataclass
class DetectorsConfig:
    """Label-free detectors of the unseen class run beside the corrector in folds with an excluded class, as
    the new_class policy's reference: each flags the excluded class where its novelty score reaches a
    threshold chosen on `correct` (see `detectors/`)."""

    names: list[str] = field(default_factory=list)
    """Detectors to run: msp, energy, maxlogit, entropy, gen, klmatching (from f's logits), mahalanobis, rmd,
    knn (on `tap`), vim, dice, react, she, nci, fdbd (on f's features and final layer), or a user's
    package.module:Class. Each one's settings go under its name, e.g. detectors.knn.k."""
    tap: str | None = None
    """The tap whose geometry mahalanobis, rmd and knn measure (one of features.taps); null: the layer before
    the net's classifier (fc for the paper net)."""
    settings: dict[str, Any] = field(default_factory=dict, metadata={"plugins": DETECTORS})

    def in_use(self) -> list[str]:
        return list(self.names)


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
class SchedulerConfig:
    """Tune's trial scheduler (spec section `scheduler`), for a base-net `search`: it stops samples whose
    validation accuracy, reported every epoch, trails the others'. Validation sets differ between folds and
    seeds, so a spec with a scheduler runs one fold and one seed. Write `scheduler: asha`, or with settings
    `scheduler: {asha: {grace_period: 5}}`; a stopped sample is recorded as such and left out of
    collect's and best's choice (see `schedulers`)."""

    name: str | None = None
    """null (every sample trains to the end), asha (asynchronous successive halving), median_stopping, or a
    user's package.module:Class; its settings go under its name, e.g. scheduler.asha.grace_period."""
    settings: dict[str, Any] = field(default_factory=dict, metadata={"plugins": SCHEDULERS})

    def in_use(self) -> list[str]:
        return [self.name] if self.name else []


@dataclass
class ReportConfig:
    """How collect states the uncertainty of its figures (spec section `report`)."""

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
    """Root of run directories: a local path (~ is your home), a shared filesystem path or a URI (s3://, gs://)."""
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
    """Samples drawn from `search` per fold and seed, by a generator seeded with 0: a spec draws the same
    samples on every machine and every rerun (sweep.SEARCH_SEED)."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Tune's trial scheduler, which stops a `search`'s weak samples early."""
    tracking: dict[str, str] = field(default_factory=dict)
    """Optional experiment tracking through Tune's callbacks: {mlflow: TRACKING_URI} and/or
    {wandb: PROJECT}, e.g. {mlflow: "sqlite:///outputs/mlflow.db"}. Needs the `tracking` install extra."""
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    """Label-free detectors of the unseen class, compared with the correctors in the report."""
    report: ReportConfig = field(default_factory=ReportConfig)
    """The intervals and tests of collect's report."""

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def run_dir(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"



def plugin_field(cls: type) -> tuple[str, Registry] | None:
    """(field name, registry) of a section that holds plug-ins' settings, or None."""
    for f in fields(cls):
        if "plugins" in f.metadata:
            return f.name, f.metadata["plugins"]
    return None


def settings_of(section: Any, name: str) -> Any:
    """The settings of the plug-in `section` names `name` (its own section, or its Settings' defaults)."""
    found = section.settings.get(name)
    if found is None:
        found = plugin_field(type(section))[1].get(name).Settings()
    return found


def as_dict(obj: Any) -> dict[str, Any]:
    """A spec section as the spec writes it: nested sections as mappings, each plug-in's settings under its
    name (a plug-in without settings writes nothing)."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if "plugins" in f.metadata:
            out |= {name: as_dict(settings) for name, settings in value.items() if fields(settings)}
        else:
            out[f.name] = as_dict(value) if is_dataclass(value) else copy.deepcopy(value)
    return out
