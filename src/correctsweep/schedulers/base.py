"""The interface of a trial scheduler, and what every one of them is given.

A scheduler sees the per-epoch results the trainer reports to Tune (`trial._base_net`: stage "train", with
`epoch` and `val_accuracy`) and decides whether a trial trains on. The results of a trial's later stages
(extract, corrector, done) hold neither key, and Ray's schedulers pass over results that lack them, so a
scheduler never stops a trial once its net is trained (nor one whose net is reused: it reports no epochs).
Tune itself would fail such a result ("did not include the specified metric"), so a sweep with a scheduler
turns that check off (TUNE_DISABLE_STRICT_METRIC_CHECKING).

A trial the scheduler stops ends with its last result marked `done` at stage "train"; a trial interrupted by
Ctrl-C ends at stage "train" too, but not done (`was_stopped` tells the two apart). The sweep records each
stopped trial (`stopped`), and collect and best leave them out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from correctsweep.atomic import write_json
from correctsweep.config import Spec, from_mapping
from correctsweep.errors import CorrectsweepError, SpecError
from correctsweep.layout import RunLayout
from correctsweep.plugins import SCHEDULERS, Plugin

TIME_ATTR, METRIC, MODE = "epoch", "val_accuracy", "max"  # what the trainer reports each epoch


class Scheduler(Plugin):
    """A trial scheduler: `build` makes Ray's scheduler from the plug-in's settings."""

    registry = SCHEDULERS

    @classmethod
    def build(cls, settings: Any, max_t: int):
        """Ray's TrialScheduler on TIME_ATTR and METRIC, for trials of at most `max_t` epochs."""
        raise NotImplementedError

    @classmethod
    def check_budget(cls, settings: Any, epochs: int) -> None:
        """A SpecError naming the first setting that `epochs` (base_net.epochs) makes impossible."""


def make(spec: Spec):
    """The spec's scheduler as Ray's, or None (Tune's default, every trial runs to the end)."""
    name = spec.scheduler.name
    if not name:
        return None
    return SCHEDULERS.get(name, "scheduler.name").build(spec.scheduler.settings[name], spec.base_net.epochs)


def was_stopped(last_result: dict | None) -> bool:
    """Whether a trial's last result says the scheduler stopped it: Tune marks the result a STOP decision
    answered `done`, and only the training stage reports what a scheduler reads."""
    return bool(last_result) and bool(last_result.get("done")) and last_result.get("stage") == "train"


@dataclass
class StoppedTrial:
    """A `search` sample the scheduler stopped while its net trained: it has no net, features or result, and
    collect and best count it and leave it out. Written by the sweep to layout.stopped_file."""

    fold: str
    seed: int
    net_key: str
    """The key its net would have had (keys.net_key)."""
    epoch: int
    """The last epoch it trained."""
    val_accuracy: float
    """Its validation accuracy at that epoch."""
    scheduler: str
    sampled: dict[str, Any]
    """Its `search` values, by dotted key."""

    def write(self, layout: RunLayout) -> None:
        write_json(layout.stopped_file(self.fold, self.seed, self.net_key), asdict(self))


def stopped_trials(layout: RunLayout) -> list[StoppedTrial]:
    """Every stopped sample the run directory records; a one-line error names a record that does not read back."""
    out = []
    for path in layout.stopped_files():
        try:
            out.append(from_mapping(StoppedTrial, json.loads(path.read_text()), ""))
        except (OSError, ValueError, SpecError) as e:
            raise CorrectsweepError(f"stopped-trial record {path} is unreadable ({str(e)[:60]}); delete it (it only "
                                    "says the scheduler stopped that sample)") from None
    return out
