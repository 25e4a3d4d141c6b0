"""best_config.yaml: what `correctsweep best` chose, as typed records. `best` writes it, `predict` reads it
back (through the same dataclasses, every field's type checked), so a file that another version wrote, or
that was cut short, is refused in one line naming it and the `correctsweep best` rerun that rewrites it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from correctsweep.atomic import write_text
from correctsweep.config import from_mapping
from correctsweep.corrector_store import CorrectorRecord
from correctsweep.errors import CorrectsweepError, SpecError


@dataclass
class RunnerUp:
    """The search's next-best complete candidate."""

    candidate: int
    policy: str
    taps: list[str]
    tau: float
    cv_score: float
    margin: float
    """How much lower its CV score is than the winner's."""


@dataclass
class ArtifactSources:
    """Where a fold x seed's net and corrector are, relative to the run directory."""

    model: str
    corrector: str


@dataclass
class FoldChoice:
    """One fold x seed's result as best assesses it: its search's winner, runner-up and test score. The
    chosen one of each fold is an entry of best_config.yaml's `folds`."""

    fold: str
    seed: int
    excluded: int | None
    class_names: list[str]
    """The names of `corrector.classes`, in their order."""
    net: str
    net_key: str
    corrector: CorrectorRecord
    test_score: float
    """The objective of the corrected h on `test`: reported, never used to choose."""
    runner_up: RunnerUp | None
    source: ArtifactSources
    artifacts: dict[str, str] = field(default_factory=dict)
    """Artifact name (weights, net_config, corrector, corrector_config, corrector_projection) -> its copy,
    relative to best/; filled in as best/ is written."""
    net_sha256: str = ""
    """The SHA-256 of the net's weights the corrector was fitted on (predict checks best/'s net against it);
    filled in as best/ is written."""


@dataclass
class Setting:
    """A (policy, taps) setting, scored over the results that tried it (see `best`)."""

    policy: str
    taps: list[str]
    mean_cv_score: float
    tried_in: str
    """'N of M results'."""


@dataclass
class RunnerUpSetting(Setting):
    margin: float
    """How much lower its mean CV score is than the chosen setting's."""


@dataclass
class OverallSetting(Setting):
    runner_up: RunnerUpSetting | None


@dataclass
class BestConfig:
    run: str
    objective: str
    max_harm: float | None
    """The certified bound on Harm (corrector.max_harm), or None: uncertified."""
    confidence: float
    harm_measure: str
    folds: list[FoldChoice]
    overall: OverallSetting

    def write(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def read(cls, path: Path) -> BestConfig:
        try:
            return from_mapping(cls, yaml.safe_load(Path(path).read_text()), "selection", finite=False)
        # SpecError: an unknown key or a wrong type; TypeError: a missing field (a file of another version)
        except (OSError, ValueError, yaml.YAMLError, SpecError, TypeError) as e:
            raise CorrectsweepError(f"{path} is unreadable as this version's selection "
                                    f"({str(e).splitlines()[0][:80]}); rerun `correctsweep best` on its run "
                                    "directory") from None
