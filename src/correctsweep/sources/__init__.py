"""Dataset sources by name (the spec's data.source): one module each, a `Source` subclass that reads
its layout into `Records`. Adding a source is one module here plus its entry in SOURCES."""

from correctsweep.sources.base import RAFDB_CLASSES, Records, Source, Unreadable, read_file
from correctsweep.sources.cifar import Cifar, Cifar100
from correctsweep.sources.fer2013 import Fer2013
from correctsweep.sources.folder import Folder
from correctsweep.sources.parquet import Parquet
from correctsweep.sources.rafdb import RafDB
from correctsweep.sources.synthetic import Synthetic

SOURCES: dict[str, Source] = {s.name: s for s in (Synthetic(), Parquet(), RafDB(), Fer2013(), Folder(), Cifar(),
                                                  Cifar100())}

__all__ = ["RAFDB_CLASSES", "SOURCES", "Records", "Source", "Unreadable", "read_file"]
