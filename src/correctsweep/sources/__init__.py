"""Dataset sources by name (the spec's data.source): one module each, a `Source` subclass that reads its
layout into `Records`. Adding a source is one new module here: it registers itself (see base.Source)."""

import importlib
import pkgutil

from correctsweep.sources.base import RAFDB_CLASSES, SOURCES, Records, Source, Unreadable, read_file

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["RAFDB_CLASSES", "SOURCES", "Records", "Source", "Unreadable", "read_file"]
