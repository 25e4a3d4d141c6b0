"""parquet: tables like ../shared/data/* — `image` (encoded bytes), `label` (integers or strings), and
optionally `split` (train/valid/test), `source_name` (the sample id) and `label_name` (the class name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from correctsweep.errors import DataError
from correctsweep.sources.base import Records, Source


def parquet_files(path: Path) -> list[Path]:
    """A .parquet file, or the .parquet files under a folder (recursively), sorted."""
    return [path] if path.is_file() else sorted(f for f in path.rglob("*.parquet") if f.is_file())


def _unreadable(what: str, e: Exception) -> DataError:
    return DataError(f"{what} is not readable as Parquet ({str(e).splitlines()[0][:100]})")


def image_dataset(files: list[Path], what: str) -> pads.Dataset:
    """Parquet files as one dataset whose column `image` holds encoded image bytes, read lazily (the
    source reads it whole, predict streams it); else one line naming `what`. Both read tables alike."""
    try:
        dataset = pads.dataset([str(f) for f in files], format="parquet")
        rows = dataset.count_rows()  # reads every file's footer, where a file cut short breaks
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise _unreadable(what, e) from None
    if not rows:
        raise DataError(f"{what} has no rows")
    if "image" not in dataset.schema.names:
        raise DataError(f"{what} lacks column image: it needs a column `image` of encoded image bytes, "
                        "and for data.path also label, and optionally split, source_name, label_name")
    kinds = {}  # each file's kind of image column: pyarrow reads every file as the first one's
    for f in files:
        schema = pq.read_schema(f)
        kinds.setdefault(_image_kind(schema.field("image").type) if "image" in schema.names else None, f)
    if None in kinds:
        found = pq.read_schema(kinds[None])
        got = found.field("image").type if "image" in found.names else "no column image"
        raise DataError(f"{what}: column image must hold encoded image bytes (binary, or the struct<bytes, path> "
                        f"HuggingFace datasets write), got {got} in {kinds[None].name}; write the PNG/JPEG file "
                        "contents, not paths or text")
    if len(kinds) > 1:
        raise DataError(f"{what}: {kinds['binary']} holds images as bytes and {kinds['struct']} as "
                        "struct<bytes, path>; write every file alike")
    return dataset


def _image_kind(kind: pa.DataType) -> str | None:
    """'binary' for encoded bytes, 'struct' for HuggingFace's Image feature (struct<bytes, path>), else None."""
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0 and \
            _image_kind(kind.field("bytes").type) == "binary":
        return "struct"
    return None


def image_bytes(column: pa.ChunkedArray | pa.Array) -> list:
    """The encoded bytes of an `image` column (of either kind image_dataset admits), one per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return (column.field("bytes") if pa.types.is_struct(column.type) else column).to_pylist()


def sample_ids(table: pa.Table | pa.RecordBatch, start: int) -> list[str]:
    """The rows' sample ids: their source_name, else their row number (`start` is the first row's)."""
    if "source_name" in table.schema.names:
        return [str(i) for i in table.column("source_name").to_pylist()]
    return [f"row-{start + i:07d}" for i in range(table.num_rows)]


class Parquet(Source):
    name = "parquet"
    layout = "a .parquet file or a folder of them"

    def read(self, path: Path, cfg) -> Records:
        files = parquet_files(path)
        if not files:
            raise DataError(f"no .parquet file in '{path}'; set data.path to a .parquet file or a folder of them")
        folders = sorted({str(f.parent.relative_to(path)) for f in files}) if path.is_dir() else []
        if len(folders) > 1:  # e.g. ../shared/data itself: merging FER+ and FER2013 would count faces twice
            raise DataError(f"'{path}' holds parquet files in {len(folders)} folders ({', '.join(folders[:4])}); "
                            "set data.path to one dataset's folder")
        what = f"parquet data '{path}'"
        try:
            table = image_dataset(files, what).to_table()
        except (OSError, ValueError) as e:
            raise _unreadable(what, e) from None
        if "label" not in table.column_names:
            raise DataError(f"{what} lacks column(s) label; expected image (bytes), label, and optionally split, "
                            "source_name, label_name")
        label = table.column("label")
        if not (pa.types.is_integer(label.type) or pa.types.is_string(label.type)
                or pa.types.is_large_string(label.type)) or label.null_count:
            raise DataError(f"{what}: column label must be integers or strings without nulls, "
                            f"got {label.type} with {label.null_count} null(s)")
        n = table.num_rows
        split = table.column("split").to_pylist() if "split" in table.column_names else [""] * n
        labels = np.asarray(label.to_pylist())
        return Records(image_bytes(table.column("image")), labels, sample_ids(table, 0), [s or "" for s in split],
                       _names(table, labels, path) if "label_name" in table.column_names else None)


def _names(table: pa.Table, labels: np.ndarray, path: Path) -> dict:
    """label -> its label_name; a label with two names is an error (a table joined from two sources)."""
    names = {}
    for label, name in zip(labels.tolist(), table.column("label_name").to_pylist()):
        if name is None or names.setdefault(label, str(name)) != str(name):
            raise DataError(f"parquet data '{path}': label {label!r} has label_name {names.get(label)!r} "
                            f"and {name!r}; give every label one name")
    return names
