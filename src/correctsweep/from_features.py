"""A run from a features table (data.source features, see `sources.features`): f's outputs are given, so no
image, net or GPU is needed. A trial reads its fold's rows, numbers and names the classes, takes f's prediction
from pred_f or the masked logits, splits the rows into correct and test, writes them as the run's features
files and goes on as every trial does from there (`trial.correct_and_publish`): every corrector kind, the
detectors that read logits or a tap, predictions/, the result; collect and best follow. `TableClassifier` is
h on rows of the same columns: `predict` and `load_corrected` on a table run, and `export` writes its g alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from correctsweep import detectors
from correctsweep.config import DataConfig, Spec
from correctsweep.corrector_store import load_corrector
from correctsweep.data import Dataset, class_names, fold_of, numbered, split_groups
from correctsweep.errors import CorrectsweepError, DataError, SpecError
from correctsweep.features import FeatureSet, pool_taps, read_split
from correctsweep.keys import net_key
from correctsweep.kinds import corrector_inputs
from correctsweep.layout import RunLayout
from correctsweep.policy import apply_policy
from correctsweep.predict import Chunk, CorrectedClassifier, Outputs, Selection
from correctsweep.results import TrialResult
from correctsweep.sources import Records
from correctsweep.sources.features import SPLITS, FeatureRows, feature_rows, open_table, tap_names
from correctsweep.sources.parquet import parquet_files
from correctsweep.train import pick_device
from correctsweep.trial import (
    FoldFeatures,
    FoldRun,
    NetPlan,
    StageClock,
    clear_partials,
    correct_and_publish,
    trial_threads,
    write_features,
)

NET = "features"  # what results and reports call f here


def to_classes(raw: np.ndarray, classes: list[int], names: dict[int, str], column: str, what: str) -> np.ndarray:
    """Labels as the table gives them (the class labels, or for string labels the classes' names) as class
    labels; a DataError naming the first that is no class."""
    if raw.dtype.kind in "iu":
        out = raw.astype(np.int64)
    else:
        by_name = {name: c for c, name in names.items()}
        out = np.asarray([by_name.get(str(v), -1) for v in raw], dtype=np.int64)
    unknown = ~np.isin(out, classes)
    if unknown.any():
        raise DataError(f"{what}: {column} {raw[unknown][0].item()!r} is none of the classes "
                        f"({', '.join(names[c] for c in classes)})")
    return out


def outputs(rows: FeatureRows, classes: list[int], names: dict[int, str], excluded: int | None,
            what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """f's predictions (class labels) and the rows' taps, logits and softmax among them when the rows hold
    logits, masked and pooled as for a net's (`features.pool_taps`)."""
    taps, pred_f = dict(rows.taps), None
    if rows.logits is not None:
        if rows.logits.shape[1] != len(classes):
            raise DataError(f"{what}: logits hold {rows.logits.shape[1]} numbers per row, but there are "
                            f"{len(classes)} classes; give one logit per class, in class order")
        index = None if excluded is None else classes.index(excluded)
        logits = torch.from_numpy(rows.logits).float()
        masked = logits.clone()
        if index is not None:
            masked[:, index] = float("-inf")
        pred_f = np.asarray(classes)[masked.argmax(1).numpy()]
        pooled = pool_taps({"logits": logits}, masked, ["logits", "softmax"], False, index)
        taps |= {name: value.numpy() for name, value in pooled.items()}
    if rows.pred_f is not None:
        pred_f = to_classes(rows.pred_f, classes, names, "pred_f", what)
    if pred_f is None:
        raise DataError(f"{what} has neither pred_f nor logits: give f's prediction or its logits per row")
    if excluded is not None and (pred_f == excluded).any():
        raise DataError(f"{what}: f predicts its excluded class {names[excluded]} in {(pred_f == excluded).sum()} "
                        "row(s); fold J's rows must come from f trained without class J")
    return pred_f, taps


@dataclass
class FeatureTable:
    """The run's features table: its classes, numbered and named as a dataset's, and its folds."""

    path: Path
    dataset: pads.Dataset
    """The table, read a fold at a time."""
    classes: list[int]
    names: dict[int, str]
    folds: list[str] | None
    """The fold partitions ('none' or class labels), None when the table is not partitioned by fold."""

    @property
    def what(self) -> str:
        return f"features table '{self.path}'"

    @classmethod
    def load(cls, cfg: DataConfig) -> FeatureTable:
        path = Path(cfg.path)
        if not path.exists():
            raise DataError(f"data.path '{cfg.path}' does not exist; point it at a Parquet features table")
        dataset = open_table(path, f"features table '{path}'")
        if "label" not in dataset.schema.names:
            raise DataError(f"features table '{path}' lacks column label (the true class of each row)")
        rows = dataset.to_table(columns=["label"] + (["fold"] if "fold" in dataset.schema.names else []))
        raw = feature_rows(rows.select(["label"]), f"features table '{path}'").labels
        labels, names = numbered(Records([], raw, [], [], None))
        ds = Dataset(torch.empty(0), labels, np.arange(len(labels)).astype(str), np.full(len(labels), ""), names)
        if len(ds.classes) < 3:
            raise DataError(f"features table '{path}' has {len(ds.classes)} class(es); correctsweep needs at least 3")
        folds = (sorted({str(v) for v in rows.column("fold").to_pylist()}) if "fold" in rows.column_names else None)
        return cls(path, dataset, ds.classes, class_names(ds, cfg), folds)

    def plan(self, spec: Spec) -> NetPlan:
        """The taps the corrector gets and the detectors read, checked like a net's (`trial.plan_net`)."""
        known = tap_names(self.dataset.schema)
        if not known:
            raise DataError(f"{self.what} has no feature column and no logits: give g something to read (numeric or "
                            "list<float> columns, or f's logits)")
        taps = list(spec.features.taps or known)
        for tap in taps:
            if tap not in known:
                raise SpecError(f"features.taps: '{tap}' is no tap of {self.what}; its taps: {', '.join(known)}")
        feature = next((t for t in known if t not in ("logits", "softmax")), known[0] if known else "logits")
        plan = NetPlan(taps, spec.detectors.tap or feature, feature, NET, has_net=False)
        detectors.validate(spec.detectors.names, plan.detectors_tap, taps, False, feature)
        return plan

    def fold_rows(self, fold: str) -> pa.Table:
        """The rows of `fold`: its partition, or the whole table for fold none of an unpartitioned one."""
        if self.folds is None:
            if fold != "none":
                raise DataError(f"{self.what} is not partitioned by fold, so it holds one model's outputs: fold none "
                                "alone; set folds: [none], or write each fold's rows under fold=J/")
            return self.dataset.to_table()
        if fold not in self.folds:
            raise DataError(f"{self.what} has no partition fold={fold} (it has {', '.join(self.folds)}); "
                            "write that fold's rows or leave the fold out of `folds`")
        column = self.dataset.schema.field("fold")
        value = int(fold) if pa.types.is_integer(column.type) else fold
        return self.dataset.to_table(filter=pc.field("fold") == value).drop_columns(["fold"])


@dataclass
class FoldRows:
    """One fold's rows as a trial needs them."""

    ds: Dataset
    """The rows as a dataset without images: labels, ids, the table's split."""
    splits: dict[str, np.ndarray]
    """correct and test -> row indices."""
    pred_f: np.ndarray
    taps: dict[str, np.ndarray]


def fold_rows(table: FeatureTable, fold: str, cfg: DataConfig) -> FoldRows:
    """A fold's rows, f's outputs and their correct/test split, checked: a DataError in one line."""
    what = f"{table.what} fold {fold}"
    rows = feature_rows(table.fold_rows(fold), what)
    excluded = None if fold == "none" else int(fold)
    labels = to_classes(rows.labels, table.classes, table.names, "label", what)
    pred_f, taps = outputs(rows, table.classes, table.names, excluded, what)
    ds = Dataset(torch.empty(0), labels, rows.ids, rows.split, table.names)
    if len(np.unique(rows.ids)) != len(rows.ids):
        raise DataError(f"{what}: sample ids repeat; give every row its own sample_id")
    if (rows.split != "").any():
        bad = sorted(set(rows.split.tolist()) - set(SPLITS))
        if bad:
            raise DataError(f"{what}: split value(s) {bad[:3]} are not correct or test")
        splits = {name: np.flatnonzero(rows.split == name) for name in SPLITS}
    else:
        share = cfg.correct_fraction / (1 - cfg.train_fraction)  # the spec's correct : test proportion
        correct, test = split_groups(labels, rows.ids, [share, 1 - share], np.random.default_rng(cfg.split_seed))
        splits = {"correct": np.sort(correct), "test": np.sort(test)}
    for name, idx in splits.items():
        missing = sorted(set(table.classes) - set(labels[idx].tolist()))
        if missing:
            raise DataError(f"{what}: split {name} has no row of class {table.names[missing[0]]}; add rows or "
                            "change the split")
    return FoldRows(ds, splits, pred_f, taps)


def check_table_folds(spec: Spec, folds: list) -> list[str]:
    """The spec's folds as labels, every one's rows read and checked before a sweep starts any trial."""
    table = FeatureTable.load(spec.data)
    table.plan(spec)
    named = [str(c) for c in table.classes] if "all" in folds else []
    named = list(dict.fromkeys(named + [fold_of(f, table.names) for f in folds if f != "all"]))
    for fold in named:
        fold_rows(table, fold, spec.data)
    return named


def run_table_trial(spec: Spec, fold: str, seed: int, log: Callable[[str], None] = print,
                    progress: Callable[[dict], None] | None = None) -> TrialResult:
    """`trial.run_trial` for a features table: its fold's rows become the features files, then the corrector."""
    layout, clock = RunLayout.of(spec), StageClock()
    layout.check_writable()
    pick_device(spec.corrector.device, "corrector.device")
    threads = trial_threads(spec)
    torch.set_num_threads(threads)
    with clock("data"):
        table = FeatureTable.load(spec.data)
        fold = fold_of(fold, table.names)
        plan = table.plan(spec)
        given = fold_rows(table, fold, spec.data)
    layout.pull(layout.fold_parts(fold, seed))
    key = net_key(spec, fold, seed)
    run = FoldRun(spec, layout, given.ds, given.splits, plan, fold, seed, key, threads, clock, log, progress,
                  torch.device("cpu"))
    with layout.lock(fold, seed, key):
        clear_partials(run)
        with clock("extract"):
            sets = _features(run, given)
        return correct_and_publish(run, sets, None, {"train": {"features": str(table.path)}})


def _features(run: FoldRun, given: FoldRows) -> FoldFeatures:
    """The fold's correct and test rows as the run's features files (reused while the table is unchanged: its
    key is the net key's part)."""
    return write_features(run, run.net_key, lambda idx: (given.pred_f[idx],
                                                         {t: given.taps[t][idx] for t in run.plan.taps}))


class TableClassifier(CorrectedClassifier):
    """A table run's h on rows of the table's columns (a Parquet file or folder, a pyarrow Table or a pandas
    DataFrame): f's outputs are read from the rows, g corrects them."""

    def __init__(self, selection: Selection, spec: Spec, device: str = "auto"):
        self.selection, self.spec, self.device = selection, spec, torch.device("cpu")
        try:
            self.corrector, self.projection = load_corrector(selection.corrector_dir, selection.record)
        except CorrectsweepError as e:
            raise CorrectsweepError(f"{e}; rerun `correctsweep trial` for fold {selection.fold} seed "
                                    f"{selection.seed}") from None
        self.extracted = list(selection.record.taps)
        self.channels = 0

    @property
    def names(self) -> dict[int, str]:
        return dict(zip(self.classes, self.class_names))

    def rows(self, table: pa.Table | pa.RecordBatch, start: int = 0) -> FeatureRows:
        return feature_rows(pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table,
                            "INPUT rows", start)

    def as_batch(self, rows) -> FeatureRows:
        """Rows as a FeatureRows: from a Parquet path, a pyarrow Table or a pandas DataFrame."""
        if isinstance(rows, FeatureRows):
            return rows
        if isinstance(rows, pd.DataFrame):
            rows = pa.Table.from_pandas(rows, preserve_index=False)
        if isinstance(rows, (str, Path)):
            rows = open_table(Path(rows), f"INPUT {rows}").to_table()
        return self.rows(rows)

    def run(self, rows: FeatureRows) -> Outputs:
        """h on the rows (`as_batch`)."""
        record = self.selection.record
        pred_f, taps = outputs(rows, self.classes, self.names, self.selection.excluded, "INPUT rows")
        missing = [t for t in record.taps if t not in taps]
        if missing:
            raise DataError(f"INPUT rows lack the tap {missing[0]} that g reads; give the run's feature columns")
        fs = FeatureSet(rows.ids, pred_f, pred_f, taps, {})
        proba = self.corrector.predict_proba(corrector_inputs(fs, record.taps, self.projection)[0])
        pred_h = apply_policy(proba, pred_f, self.classes, record.policy, record.tau,
                              self.selection.excluded).astype(np.int64)
        return Outputs(pred_f, pred_h, proba)

    def inputs(self, text: str, size: int) -> tuple[int, Iterator[Chunk]]:
        """INPUT as (row count, chunks of `size` rows): a Parquet table or a folder of them."""
        path = Path(text)
        if not path.exists() or not parquet_files(path):
            raise CorrectsweepError(f"INPUT {path} is no Parquet table; give rows of the run's features table columns")
        dataset = open_table(path, f"INPUT {path}")
        columns = [c for c in dataset.schema.names if c != "fold"]

        def chunks():
            start = 0
            for batch in dataset.to_batches(columns=columns, batch_size=size):
                rows = self.rows(batch, start)
                labels = None if rows.labels is None else to_classes(rows.labels, self.classes, self.names, "label",
                                                                     f"INPUT {path}")
                yield Chunk(list(rows.ids), rows, labels)
                start += batch.num_rows
        return dataset.count_rows(), chunks()

    def tap_widths(self) -> dict[str, int]:
        """Each tap's width, as the run's features files of this fold and seed hold them."""
        sel = self.selection
        files = RunLayout(sel.run_dir).features_files(sel.fold, sel.seed, "test")
        for file in files:
            dims = read_split(file).meta.get("tap_dims", {})
            if all(t in dims for t in sel.record.taps):
                return {t: int(dims[t]) for t in sel.record.taps}
        raise CorrectsweepError(f"{sel.run_dir} has no features file of fold {sel.fold} seed {sel.seed} with the taps "
                                "g reads; rerun its trial")

