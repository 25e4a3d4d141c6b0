"""rafdb: RAF-DB's official `basic/` layout, `EmoLabel/list_patition_label.txt` (sic) and
`Image/aligned/<name>_aligned.jpg`; labels 1..7 in its own numbering, split from the file name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from correctsweep.errors import DataError
from correctsweep.sources.base import RAFDB_CLASSES, Records, Source, read_file


class RafDB(Source):
    name = "rafdb"
    layout = "RAF-DB's basic/ folder"

    def read(self, path: Path, cfg) -> Records:
        label_file = path / "EmoLabel" / "list_patition_label.txt"
        if not label_file.is_file():
            raise DataError(f"RAF-DB label file '{label_file}' not found; data.path must be RAF-DB's basic/ folder")
        blobs, labels, ids, split = [], [], [], []
        for lineno, line in enumerate(label_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isascii() or not parts[1].isdigit():
                raise DataError(f"{label_file}:{lineno}: expected '<name>.jpg <label>', got {line!r}")
            name = parts[0]
            image = path / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
            blobs.append(read_file(image, f"RAF-DB image (listed at {label_file}:{lineno})"))
            labels.append(int(parts[1]))
            ids.append(name)
            split.append(name.split("_")[0])
        return Records(blobs, np.asarray(labels), ids, split, RAFDB_CLASSES)
