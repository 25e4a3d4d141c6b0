"""folder: one sub-folder per class, named by the class (any name, unicode included), holding its images
in any format Pillow reads (sub-folders of it too). Folders named by emotion words (happy, sadness, ...)
keep RAF-DB numbering and names; folders named by numbers are those labels; any other names are the
classes' names, numbered 0..K-1 in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from correctsweep.errors import DataError
from correctsweep.sources.base import RAFDB_CLASSES, Records, Source, read_file

EMOTION_WORDS = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "happiness": 4, "sad": 5, "sadness": 5,
                 "angry": 6, "anger": 6, "neutral": 7}


def image_suffixes() -> set[str]:
    """Every file suffix Pillow has a decoder for (.gif and .tif included, which torchvision's list lacks)."""
    Image.init()
    return {suffix for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` (recursively, by `image_suffixes`), sorted. A hidden name (a file or a
    folder starting with '.') anywhere below `folder` is skipped; links are kept, dangling ones too, which
    decode as Unreadable: named, or skipped and counted, never dropped unseen."""
    suffixes = image_suffixes()
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in suffixes and not f.is_dir()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


class Folder(Source):
    name = "folder"
    layout = "a folder with one sub-folder of images per class"

    def read(self, path: Path, cfg) -> Records:
        if not path.is_dir():
            raise DataError(f"image folder '{path}' not found; set data.path to {self.layout}")
        subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        hidden = next((p for p in path.iterdir() if p.is_dir() and p.name.startswith(".") and image_files(p)), None)
        if hidden is not None:  # .git or .ipynb_checkpoints hold no images: a class folder would not be left out unsaid
            raise DataError(f"class folder '{hidden}' holds images but its name starts with '.', which hides it; "
                            "rename it (or move it out of data.path)")
        if not subs:
            raise DataError(f"image folder '{path}' has no class sub-folders; data.path must be {self.layout}")
        labels_of, names = _labels(subs)
        blobs, labels, ids = [], [], []
        for sub in subs:
            files = image_files(sub)
            if not files:
                raise DataError(f"class folder '{sub}' holds no images; remove it or add images")
            blobs += [read_file(f) for f in files]
            labels += [labels_of[sub.name]] * len(files)
            ids += [str(f.relative_to(path)) for f in files]
        return Records(blobs, np.asarray(labels), ids, [""] * len(ids), names)


def _labels(subs: list[Path]) -> tuple[dict, dict | None]:
    """Each sub-folder's label, and the classes' names when the folder names are not them."""
    folder_names = [s.name for s in subs]
    is_number = lambda n: n.isascii() and n.isdigit()
    if any(n.lower() in EMOTION_WORDS for n in folder_names) and all(
            n.lower() in EMOTION_WORDS or (is_number(n) and int(n) in RAFDB_CLASSES) for n in folder_names):
        return {n: EMOTION_WORDS.get(n.lower()) or int(n) for n in folder_names}, RAFDB_CLASSES
    if all(is_number(n) for n in folder_names):
        return {n: int(n) for n in folder_names}, None
    return {n: n for n in folder_names}, None
