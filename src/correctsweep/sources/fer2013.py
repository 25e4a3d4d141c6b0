"""fer2013: Kaggle's `fer2013.csv` (emotion,pixels,Usage). FER2013's own codes 0 Angry, 1 Disgust,
2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral are mapped to RAF-DB numbering."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from correctsweep.errors import DataError
from correctsweep.sources.base import RAFDB_CLASSES, Records, Source

TO_RAFDB = {0: 6, 1: 3, 2: 2, 3: 4, 4: 5, 5: 1, 6: 7}
USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}


class Fer2013(Source):
    name = "fer2013"
    layout = "Kaggle's fer2013.csv"

    def read(self, path: Path, cfg) -> Records:
        if not path.is_file():
            raise DataError(f"fer2013 CSV '{path}' not found; set data.path to Kaggle's fer2013.csv")
        arrays, labels, ids, split = [], [], [], []
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not a column
                for row_no, row in enumerate(_rows(fh, path), 2):
                    arrays.append(_pixels(row, path, row_no))
                    labels.append(TO_RAFDB[_code(row, path, row_no)])
                    ids.append(f"fer2013-{row_no - 2:05d}")
                    split.append(USAGE.get(row.get("Usage", ""), ""))
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"'{path}' is not a text CSV ({str(e)[:80]}); check data.source and data.path") from None
        return Records(arrays, np.asarray(labels), ids, split, RAFDB_CLASSES)


def _rows(fh, path: Path):
    reader = csv.DictReader(fh)
    if not {"emotion", "pixels"} <= set(reader.fieldnames or ()):
        raise DataError(f"'{path}' lacks the columns emotion,pixels(,Usage) of Kaggle's fer2013.csv")
    return reader


def _code(row: dict, path: Path, row_no: int) -> int:
    text = (row["emotion"] or "").strip()
    code = int(text) if text.isascii() and text.isdigit() else -1
    if code not in TO_RAFDB:
        raise DataError(f"{path}:{row_no}: emotion {row['emotion']!r} is not a FER2013 code 0..6")
    return code


def _pixels(row: dict, path: Path, row_no: int) -> np.ndarray:
    try:
        pixels = np.asarray((row["pixels"] or "").split(), dtype=np.float32)
    except ValueError:
        raise DataError(f"{path}:{row_no}: pixels must be space-separated numbers 0..255") from None
    side = int(round(len(pixels) ** 0.5))
    if not len(pixels) or side * side != len(pixels) or not (0 <= pixels.min() and pixels.max() <= 255):
        raise DataError(f"{path}:{row_no}: pixels are not a square 8-bit image ({len(pixels)} values)")
    return pixels.astype(np.uint8).reshape(1, side, side)
