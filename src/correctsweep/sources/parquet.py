"""parquet: tables like ../shared/data/* — `image` (encoded bytes), `label` (integers or strings), and
optionally `split` (train/valid/test), `source_name` (the sample id) and `label_name` (the class name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from correctsweep.errors import DataError
from correctsweep.sources.base import Records, Source


class Parquet(Source):
    name = "parquet"
    layout = "a .parquet file or a folder of them"

    def read(self, path: Path, cfg) -> Records:
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*.parquet") if f.is_file())
        if not files:
            raise DataError(f"no .parquet file in '{path}'; set data.path to a .parquet file or a folder of them")
        folders = sorted({str(f.parent.relative_to(path)) for f in files}) if path.is_dir() else []
        if len(folders) > 1:  # e.g. ../shared/data itself: merging FER+ and FER2013 would count faces twice
            raise DataError(f"'{path}' holds parquet files in {len(folders)} folders ({', '.join(folders[:4])}); "
                            "set data.path to one dataset's folder")
        try:
            table = pads.dataset([str(f) for f in files], format="parquet").to_table()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"'{path}' is not readable as Parquet ({str(e).splitlines()[0][:100]}); "
                            "check data.source and data.path") from None
        missing = {"image", "label"} - set(table.column_names)
        if missing:
            raise DataError(f"parquet data '{path}' lacks column(s) {', '.join(sorted(missing))}; "
                            "expected image (bytes), label, and optionally split, source_name, label_name")
        image = table.column("image")
        if not (pa.types.is_binary(image.type) or pa.types.is_large_binary(image.type)):
            raise DataError(f"parquet data '{path}': column image must hold encoded image bytes (binary), "
                            f"got {image.type}; write the PNG/JPEG file contents, not paths or text")
        label = table.column("label")
        if not (pa.types.is_integer(label.type) or pa.types.is_string(label.type)
                or pa.types.is_large_string(label.type)) or label.null_count:
            raise DataError(f"parquet data '{path}': column label must be integers or strings without nulls, "
                            f"got {label.type} with {label.null_count} null(s)")
        n = table.num_rows
        ids = (table.column("source_name").to_pylist() if "source_name" in table.column_names
               else [f"row-{i:07d}" for i in range(n)])
        split = table.column("split").to_pylist() if "split" in table.column_names else [""] * n
        labels = np.asarray(label.to_pylist())
        return Records(image.to_pylist(), labels, [str(i) for i in ids], [s or "" for s in split],
                       _names(table, labels, path) if "label_name" in table.column_names else None)


def _names(table: pa.Table, labels: np.ndarray, path: Path) -> dict:
    """label -> its label_name; a label with two names is an error (a table joined from two sources)."""
    names = {}
    for label, name in zip(labels.tolist(), table.column("label_name").to_pylist()):
        if name is None or names.setdefault(label, str(name)) != str(name):
            raise DataError(f"parquet data '{path}': label {label!r} has label_name {names.get(label)!r} "
                            f"and {name!r}; give every label one name")
    return names
