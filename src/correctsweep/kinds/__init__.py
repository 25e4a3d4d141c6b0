"""Corrector kinds: one module each, a `Kind` subclass that sets `name` (see base.Kind for the interface).
Defining it registers it in plugins.KINDS, which imports this package's modules on first look-up."""

from correctsweep.kinds.base import Kind, Model, SearchSetup, corrector_inputs, fit_projection, stack_taps

__all__ = ["Kind", "Model", "SearchSetup", "corrector_inputs", "fit_projection", "stack_taps"]
