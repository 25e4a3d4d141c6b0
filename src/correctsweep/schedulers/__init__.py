"""Tune's trial schedulers a spec can name (`scheduler:`): one module each, a `Scheduler` subclass that sets
`name` (see base.Scheduler). Defining it registers it in plugins.SCHEDULERS."""

from correctsweep.schedulers.base import (
    METRIC,
    MODE,
    TIME_ATTR,
    Scheduler,
    StoppedTrial,
    make,
    stopped_trials,
    was_stopped,
)

__all__ = ["METRIC", "MODE", "TIME_ATTR", "Scheduler", "StoppedTrial", "make", "stopped_trials", "was_stopped"]
