"""ASHA, asynchronous successive halving (Ray's ASHAScheduler): at each rung (grace_period epochs, then that
times reduction_factor, ...) a trial trains on only if its validation accuracy is in the rung's top
1/reduction_factor so far."""

from __future__ import annotations

from dataclasses import dataclass

from correctsweep.errors import SpecError
from correctsweep.schedulers.base import METRIC, MODE, TIME_ATTR, Scheduler


class Asha(Scheduler):
    name = "asha"

    @dataclass
    class Settings:
        grace_period: int = 5
        """Epochs every trial trains before it can be stopped: the first rung."""
        reduction_factor: float = 3.0
        """Each rung keeps the best 1/reduction_factor of the trials that reached it."""
        brackets: int = 1
        """ASHA's brackets (1: plain successive halving)."""

    @classmethod
    def check(cls, settings: Settings) -> None:
        if settings.grace_period < 1:
            raise SpecError("'scheduler.asha.grace_period' must be >= 1")
        if settings.reduction_factor <= 1:
            raise SpecError("'scheduler.asha.reduction_factor' must be > 1")
        if settings.brackets < 1:
            raise SpecError("'scheduler.asha.brackets' must be >= 1")

    @classmethod
    def check_budget(cls, settings: Settings, epochs: int) -> None:
        if settings.grace_period > epochs:
            raise SpecError(f"'scheduler.asha.grace_period' ({settings.grace_period}) must be at most base_net.epochs "
                            f"({epochs}), the longest a trial trains")

    @classmethod
    def build(cls, settings: Settings, max_t: int):
        from ray.tune.schedulers import ASHAScheduler

        # stop_last_trials=False: a trial past the last rung trains until its own early stopping or max_t,
        # and always reaches its corrector
        return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max_t,
                             grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
                             brackets=settings.brackets, stop_last_trials=False)
