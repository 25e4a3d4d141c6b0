"""Corrector kinds by name: see base.Kind for the interface. A kind is one module here with a Kind subclass
that sets `name`; defining it registers it in KINDS, against which the spec's corrector.kind and
corrector.kinds are checked (and each kind's own `check`). The package imports every module in it."""

import importlib
import pkgutil

from correctsweep.kinds.base import KINDS, Kind, Model, SearchSetup, corrector_inputs, fit_projection, stack_taps

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["KINDS", "Kind", "Model", "SearchSetup", "corrector_inputs", "fit_projection", "stack_taps"]
