"""What a dataset source hands to `data`: its images (encoded or decoded), labels, ids, split and names.

A source is one module in this package with a `Source` subclass naming itself; defining it registers
it in plugins.SOURCES (the spec's `data.source` -> its reader), which imports every module here on
first look-up. Its own settings (Settings) go under data.<name> and reach it as `self.settings`.
Sources only read: decoding, resizing, label numbering, naming, checks and caching are `data`'s, the
same for every source.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from correctsweep.plugins import SOURCES, Plugin

# The emotion sets' classes, numbered as in RAF-DB (SPEC §1): the names of `data.classes: rafdb`.
RAFDB_CLASSES = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}


@dataclass(frozen=True)
class Unreadable:
    """An image file that could not be read: `data` skips and counts it, or names it, by data.skip_corrupt."""

    reason: str


def read_file(path: Path, what: str = "image") -> bytes | Unreadable:
    """The bytes of a regular file; anything else (missing, a dangling link, a FIFO or device, which
    would block or never end, a folder, unreadable) is Unreadable with the reason."""
    try:
        mode = os.stat(path).st_mode  # follows links: a dangling one raises
    except OSError as e:
        return Unreadable(f"{what} {path}: {e.strerror.lower() if e.strerror else 'not found'}")
    if not stat.S_ISREG(mode):
        return Unreadable(f"{what} {path} is not a regular file")
    try:
        return Path(path).read_bytes()
    except OSError as e:
        return Unreadable(f"{what} {path}: {e.strerror}")


@dataclass
class Records:
    """One dataset as its source read it, one entry per image."""

    images: list
    """Per image: encoded bytes (any format torchvision or Pillow decodes), a decoded uint8 array
    [C, H, W], or Unreadable (also None: an empty cell)."""
    labels: np.ndarray
    """[N] integer labels, or strings (then numbered 0..K-1 in sorted order by `data`)."""
    ids: list[str]
    """Unique sample ids (file names or row numbers)."""
    split: list[str]
    """The dataset's own split (train/valid/test), '' where it has none."""
    names: dict | None = None
    """label -> class name as the source knows it (folder names, a meta file); None: the labels are
    their own names unless the spec's data.classes names them."""


class Source(Plugin, ABC):
    registry = SOURCES
    needs_path: ClassVar[bool] = True
    """Whether data.path must be set."""
    layout: ClassVar[str] = ""
    """What data.path must point at, for the one-line errors."""
    holds_features: ClassVar[bool] = False
    """True: the source holds f's outputs per sample (a features table), not images: no net is trained or
    run, and a trial starts at the corrector."""

    def __init__(self, settings: Any = None):
        self.settings = settings if settings is not None else self.Settings()

    @abstractmethod
    def read(self, path: Path | None, cfg) -> Records:
        """The dataset under `path` (cfg: the spec's DataConfig, for sources that generate or subset)."""

    def cache_key(self, cfg) -> dict:
        """What the records depend on besides the files under data.path and the source's settings."""
        return {}
