"""features: f's outputs per sample as a Parquet dataset, for a classifier correctsweep does not run (a text or
tabular model, an image net run elsewhere). A run from it starts at the corrector (`from_features`).

Columns, one row per sample:
  label       the true class: integers or strings (strings are numbered 0..K-1 in sorted order)
  pred_f      f's prediction, in the same labels; or
  logits      f's logits, a list of K numbers in class order (the excluded class's entry is ignored: it is
              masked, as correctsweep masks a trained net's), which also become the taps logits and softmax
  split       optional: correct or test (else a stratified split by data.correct_fraction and the test share)
  sample_id   optional: each row's id (else its row number)
  any other   a feature: each list<number> column is a tap of its name, and the plain numeric columns
              together are the tap `columns`
The dataset may be Hive-partitioned by fold (fold=3/, fold=none/): a fold's rows are f's outputs with f
trained without that class (fold=none: the full model). Without fold partitions it is one model's: fold none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from correctsweep.errors import DataError
from correctsweep.sources.base import Records, Source
from correctsweep.sources.parquet import parquet_files, sample_ids

PLAIN_TAP = "columns"
"""The tap of the plain numeric columns."""
RESERVED = ("label", "pred_f", "logits", "split", "sample_id", "fold", "label_name")
SPLITS = ("correct", "test")


class Features(Source):
    name = "features"
    layout = ("a Parquet dataset of f's outputs: label, pred_f or logits, feature columns, optionally split and "
              "sample_id, optionally partitioned by fold=J/ (see docs/correct-your-model.md)")
    holds_features = True

    def read(self, path: Path, cfg) -> Records:
        raise DataError(f"data.source features ({path}) holds f's outputs, not images: there is no image to show or "
                        "net to tap; `correctsweep trial` and `sweep` start at the corrector")


def open_table(path: Path, what: str) -> pads.Dataset:
    """The Parquet dataset under `path` (Hive partitions, e.g. fold=3/, become columns), read lazily; a
    one-line DataError naming `what` when it is not one."""
    files = parquet_files(path)
    if not files:
        raise DataError(f"{what} holds no .parquet file; give {Features.layout}")
    try:
        dataset = pads.dataset(str(path), format="parquet", partitioning="hive") if path.is_dir() else \
            pads.dataset(str(path), format="parquet")
        dataset.count_rows()  # reads every file's footer, where a file cut short breaks
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{what} is not readable as Parquet ({str(e).splitlines()[0][:100]})") from None
    return dataset


@dataclass
class FeatureRows:
    """Rows of a features table as arrays, labels as the table gives them (integers or strings)."""

    ids: np.ndarray
    """str [n]."""
    labels: np.ndarray | None
    """[n] true labels; None where the rows have none (predict's input)."""
    split: np.ndarray
    """str [n]: correct, test, or '' where the table has no split column."""
    pred_f: np.ndarray | None
    """[n] f's predictions, where the table gives them."""
    logits: np.ndarray | None
    """float64 [n, K] f's logits, where the table gives them."""
    taps: dict[str, np.ndarray]
    """tap -> float32 [n, d]."""


def _list_values(column: pa.ChunkedArray, name: str, what: str) -> np.ndarray:
    """A list<number> column as float [n, d]: every row the same length, no nulls."""
    flat = column.combine_chunks()
    lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
    if flat.null_count or len(set(lengths.tolist())) > 1 or not pa.types.is_integer(flat.type.value_type) and \
            not pa.types.is_floating(flat.type.value_type):
        raise DataError(f"{what}: column {name} must hold lists of numbers of one length, without nulls (got "
                        f"{flat.type}, lengths {sorted(set(lengths.tolist()))[:4]}, {flat.null_count} null(s))")
    values = pc.list_flatten(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(len(flat), int(lengths[0]) if len(lengths) else 0)


def _labels(column: pa.ChunkedArray, name: str, what: str) -> np.ndarray:
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)) or column.null_count:
        raise DataError(f"{what}: column {name} must be integers or strings without nulls, got {column.type} "
                        f"with {column.null_count} null(s)")
    return np.asarray(column.to_pylist())


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def feature_rows(table: pa.Table, what: str, start: int = 0) -> FeatureRows:
    """The rows of `table` (see the module docstring); a DataError in one line for the first column that is
    neither reserved nor a feature, or a reserved one of the wrong type."""
    names = table.column_names
    for name in names:
        t = table.schema.field(name).type
        if name not in RESERVED and not _is_number(t) and not _is_list(t):
            raise DataError(f"{what}: column {name} ({t}) is neither a feature (numbers, or lists of numbers) nor one "
                            f"of {', '.join(RESERVED)}; drop or convert it")
    taps = {name: _list_values(table.column(name), name, what).astype(np.float32) for name in names
            if name not in RESERVED and _is_list(table.schema.field(name).type)}
    plain = [name for name in names if name not in RESERVED and _is_number(table.schema.field(name).type)]
    if plain:
        columns = [table.column(name) for name in plain]
        if any(c.null_count for c in columns):
            raise DataError(f"{what}: feature column {plain[[c.null_count > 0 for c in columns].index(True)]} has "
                            "nulls; fill them (NaN is allowed) or drop the column")
        taps[PLAIN_TAP] = np.stack([c.to_numpy().astype(np.float32) for c in columns], axis=1)
    n = table.num_rows
    split = np.asarray([s or "" for s in table.column("split").to_pylist()] if "split" in names else [""] * n)
    ids = table.rename_columns(["source_name" if c == "sample_id" else c for c in names])
    return FeatureRows(np.asarray(sample_ids(ids, start)),
                       _labels(table.column("label"), "label", what) if "label" in names else None, split,
                       _labels(table.column("pred_f"), "pred_f", what) if "pred_f" in names else None,
                       _list_values(table.column("logits"), "logits", what) if "logits" in names else None, taps)


def tap_names(schema: pa.Schema) -> list[str]:
    """The taps a table's columns give: its list columns, `columns` for its plain numeric ones, and logits and
    softmax where it holds logits."""
    own = [f.name for f in schema if f.name not in RESERVED and _is_list(f.type)]
    plain = [PLAIN_TAP] if any(f.name not in RESERVED and _is_number(f.type) for f in schema) else []
    return own + plain + (["logits", "softmax"] if "logits" in schema.names else [])
