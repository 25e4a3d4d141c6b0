"""A trial's result: what one fold x seed measured, as written to results/fold=J/seed=S.json and read
back by sweep, collect and best. The JSON is the dataclass as a mapping; reading it back checks every
field's type, so a file that parses but is not a result is named in one line, not a KeyError later."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from correctsweep.certify import Certificate, FrontierPoint
from correctsweep.config import from_mapping
from correctsweep.corrector_store import CorrectorRecord
from correctsweep.errors import CorrectsweepError, SpecError


@dataclass
class MethodRecord:
    """One corrector kind's or detector's h on `test`, scored alike: a row of the report's methods table."""

    family: str
    """corrector or detector."""
    policy: str
    tau: float
    """The corrector's tau, or the detector's threshold on its novelty score."""
    seconds: float
    """A kind: search + refit; a detector: fit + threshold."""
    gain_excluded: float
    summary: dict[str, float]
    cv_score: float | None = None
    """correctors: the cross-validated objective inside `correct`."""
    correct_score: float | None = None
    """detectors: the objective at the chosen threshold on `correct` (on its calibration rows when certified)."""
    certificate: Certificate | None = None
    """tau's certified bound on Harm (corrector.max_harm), or None when uncertified."""


@dataclass
class ResultPaths:
    """Where the fold's artifacts are, relative to the run directory."""

    model: str
    corrector: str
    """The published kind's workdir."""
    predictions: dict[str, str]
    """split (correct, test) -> its predictions file (see `predictions`): what collect's figures come from."""
    correctors: dict[str, str]
    """kind -> workdir."""


@dataclass
class TrialResult:
    fold: str
    """The excluded class's label as the run directory spells it, or 'none'."""
    seed: int
    excluded: int | None
    classes: list[int]
    class_names: list[str]
    """The names of `classes`, in their order."""
    net: str
    """The base net: paper, a torchvision model's name or a user's package.module:Class."""
    net_key: str
    features_key: str
    sweep_key: str
    summary: dict[str, float]
    """Accuracy, balanced accuracy and macro figures of f and h (metrics.summary)."""
    per_class: list[dict]
    """metrics.per_class as records: class, then every per-class metric."""
    corrector: CorrectorRecord
    """The fold's published corrector (corrector.kind), as its search's winner.json records it."""
    methods: dict[str, MethodRecord]
    paths: ResultPaths
    train: dict | None
    """train.TrainResult as a mapping (epochs, history, throughput)."""
    device: dict
    stage_seconds: dict[str, float]
    frontier: list[FrontierPoint]
    """The published corrector's Gain and Harm on `test` over its tau grid (the chosen tau among them)."""

    @property
    def names(self) -> dict[int, str]:
        return dict(zip(self.classes, self.class_names))

    def per_class_value(self, metric: str, label) -> float:
        """A per-class metric of one class (NaN when the class has none here)."""
        return next((row[metric] for row in self.per_class if row["class"] == label), float("nan"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, path: Path) -> TrialResult:
        fix = ("delete it and rerun `correctsweep trial SPEC --fold J --seed S` for it (its cached stages make "
               "that quick)")
        try:
            raw = json.loads(Path(path).read_text())
            result = from_mapping(cls, raw, "", finite=False)
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise CorrectsweepError(f"result {path} is unreadable ({str(e)[:60]}); {fix}") from None
        except (SpecError, TypeError) as e:  # a wrong type, an unknown key, a missing field
            raise CorrectsweepError(f"result {path} is not a trial result ({str(e)[:80]}); {fix}") from None
        parts = set(Path(path).parts)  # a result lies at results/fold=J/seed=S.json (or in seed=S.samples/)
        fold_ok = result.fold == "none" or result.fold.isascii() and result.fold.isdigit()
        if not fold_ok or f"fold={result.fold}" not in parts or \
                not {f"seed={result.seed}.json", f"seed={result.seed}.samples"} & parts:
            raise CorrectsweepError(f"result {path} says fold {result.fold[:40]!r} seed {result.seed}, which is not "
                                    f"where it lies; {fix}")
        if len(result.class_names) != len(result.classes):
            raise CorrectsweepError(f"result {path} names {len(result.class_names)} of its {len(result.classes)} "
                                    f"classes; {fix}")
        return result
