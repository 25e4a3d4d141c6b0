"""Corrector kinds by name: see base.Kind for the interface. A kind is one module here plus its entry in
KINDS; the spec's corrector.kind and corrector.kinds are checked against KINDS and each kind's own `check`."""

from correctsweep.kinds.base import Kind, Model, SearchSetup, corrector_inputs, fit_projection, stack_taps
from correctsweep.kinds.boosted import Boosted
from correctsweep.kinds.linear import Fisher, Logistic

KINDS: dict[str, type[Kind]] = {kind.name: kind for kind in (Boosted, Fisher, Logistic)}

__all__ = ["KINDS", "Kind", "Model", "SearchSetup", "corrector_inputs", "fit_projection", "stack_taps"]
