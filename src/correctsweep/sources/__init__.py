"""Dataset sources by name (the spec's data.source): one module each, a `Source` subclass that reads its
layout into `Records`. Adding a source is one new module here: it registers itself (see base.Source)."""

from correctsweep.sources.base import RAFDB_CLASSES, Records, Source, Unreadable, read_file

__all__ = ["RAFDB_CLASSES", "Records", "Source", "Unreadable", "read_file"]
