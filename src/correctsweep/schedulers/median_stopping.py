"""The median stopping rule (Ray's MedianStoppingRule): after grace_period epochs, a trial whose best
validation accuracy so far is below the median of the other trials' running means at the same epoch is
stopped."""

from __future__ import annotations

from dataclasses import dataclass

from ray.tune.schedulers import MedianStoppingRule, TrialScheduler

from correctsweep.errors import SpecError
from correctsweep.schedulers.base import METRIC, MODE, TIME_ATTR, Scheduler


class MedianStopping(Scheduler):
    name = "median_stopping"

    @dataclass
    class Settings:
        grace_period: int = 5
        """Epochs every trial trains before it can be stopped (the running means start here too)."""
        min_samples_required: int = 3
        """Other trials that must have reached the epoch before the median is taken."""

    @classmethod
    def check(cls, settings: Settings) -> None:
        if settings.grace_period < 1:
            raise SpecError("'scheduler.median_stopping.grace_period' must be >= 1")
        if settings.min_samples_required < 1:
            raise SpecError("'scheduler.median_stopping.min_samples_required' must be >= 1")

    @classmethod
    def check_budget(cls, settings: Settings, epochs: int) -> None:
        if settings.grace_period > epochs:
            raise SpecError(f"'scheduler.median_stopping.grace_period' ({settings.grace_period}) must be at most "
                            f"base_net.epochs ({epochs}), the longest a trial trains")

    @classmethod
    def build(cls, settings: Settings, max_t: int):
        return _Rule(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, grace_period=settings.grace_period,
                     min_samples_required=settings.min_samples_required, hard_stop=True)


class _Rule(MedianStoppingRule):
    """Ray's MedianStoppingRule, less two things our trials would trip over: it records a finished trial's
    last result, which here is the corrector's (no epoch, no validation accuracy: the next median raised a
    KeyError), and with too few samples it pauses a trial for pending ones, and a trial without checkpoints
    restarts its training from epoch 1 when resumed."""

    def on_trial_complete(self, tune_controller, trial, result):
        if TIME_ATTR in result and METRIC in result:
            super().on_trial_complete(tune_controller, trial, result)

    def _on_insufficient_samples(self, tune_controller, trial, time):
        return TrialScheduler.CONTINUE
