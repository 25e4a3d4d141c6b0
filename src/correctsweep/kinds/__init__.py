"""Corrector kinds by name (the names config.KINDS lists): see base.Kind for the interface."""

from correctsweep.kinds.base import Kind, Model
from correctsweep.kinds.boosted import Boosted
from correctsweep.kinds.linear import Fisher, Logistic

KINDS: dict[str, type[Kind]] = {kind.name: kind for kind in (Boosted, Fisher, Logistic)}

__all__ = ["KINDS", "Kind", "Model"]
