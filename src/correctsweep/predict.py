"""Apply what the sweep selected: one fold's corrected classifier h = f corrected by g, on new images.

`locate` finds a fold's net and corrector in a run directory: by default the ones `correctsweep best`
copied into best/ for the fold (best_config.yaml, read as `best_config.BestConfig`); with a seed or another
kind searched in that fold, the fold x seed's result names them (`TrialResult.paths`). Either way the
corrector is known by its record, its winner.json (`corrector_store.CorrectorRecord`). `CorrectedClassifier`
loads and checks them (the net against its SHA-256, the corrector by a load that fails in one line) and
runs h on images decoded, channel-mapped and resized as training fed them (`data.decode_batch`).
`predict_file` is `correctsweep predict`: a loop over batches of the input calling the classifier, written
to a temporary file renamed at the end.

h reproduces the run's own figures exactly because it takes the very path the trial took: the net
runs over `features.batch_size` images at a time and reads the same taps the features file holds (the
paper net computes its attention differently when its weights are not asked for, so asking for fewer
taps would move the floats), pools them with `features.pool_taps`, and g sees them through the saved
projection, then `policy.apply_policy`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from correctsweep.atomic import atomic_path
from correctsweep.best_config import BestConfig, FoldChoice
from correctsweep.config import Spec, load_spec
from correctsweep.corrector_store import CorrectorRecord, load_corrector, read_record
from correctsweep.data import decode_batch, fold_of, load_dataset, make_splits
from correctsweep.errors import CorrectsweepError, DataError
from correctsweep.features import FeatureSet, extract, read_meta
from correctsweep.kinds import corrector_inputs
from correctsweep.layout import RunLayout
from correctsweep.outputs import check_out
from correctsweep.policy import apply_policy
from correctsweep.results import TrialResult
from correctsweep.sources import read_file
from correctsweep.sources.folder import image_files, image_suffixes
from correctsweep.sources.parquet import image_bytes, image_dataset, parquet_files, sample_ids
from correctsweep.train import load_model, pick_device

SPLITS = ("train", "val", "correct", "test")
OUTPUT_COLUMNS = ["id", "pred_f", "name_f", "pred_h", "name_h", "changed", "p_h", "p_excluded", "unseen"]
"""predict's table (`CorrectedClassifier.table`), with `label` after `id` for a split of the run's dataset."""
PROGRESS_SECONDS = 5.0  # a progress line at most this often on large inputs


@dataclass(frozen=True)
class Selection:
    """One fold's corrected classifier as a run directory holds it."""

    run_dir: Path
    fold: str
    seed: int
    net_dir: Path | None
    """weights.pt and model.json: `train.load_model` reads them; None for a run from a features table."""
    corrector_dir: Path
    """The kind's model file, winner.json and, with compact embeddings, projection.npz."""
    record: CorrectorRecord
    """The corrector's winner.json: its kind, classes, taps (in the order g stacks them), policy and tau."""
    class_names: list[str]
    """The names of `record.classes`, in their order."""
    net_sha256: str = ""
    """The SHA-256 of the weights the corrector was fitted on, where best/ or the features recorded it."""

    @property
    def excluded(self) -> int | None:
        return None if self.fold == "none" else int(self.fold)


def run_root(path: str | Path) -> Path:
    """The run directory of RUN_DIR or RUN_DIR/best."""
    path = Path(path)
    return path.parent if path.name == "best" and RunLayout(path.parent).best_config.is_file() else path


def _rerun(fold: str, seed: int) -> str:
    return f"rerun `correctsweep trial` for fold {fold} seed {seed}"


def locate(path: str | Path, fold, seed: int | None = None, kind: str | None = None) -> Selection:
    """The corrected classifier of `fold` (a label, a class name or 'none'): best's choice, or with `seed`
    or `kind` the one that fold x seed's search of that kind published (seed: best's, unless given)."""
    layout = RunLayout(run_root(path))
    results = layout.result_files()
    if not results and not layout.best_config.is_file():
        raise CorrectsweepError(f"{layout.root} has no results/ and no best/; give a run directory after "
                                "`correctsweep trial` (or `sweep`) and `correctsweep best`")
    choices = BestConfig.read(layout.best_config).folds if layout.best_config.is_file() else []
    names = dict(zip(choices[0].corrector.classes, choices[0].class_names)) if choices else \
        TrialResult.read(results[0]).names
    fold = fold_of(fold, names)
    choice = next((c for c in choices if c.fold == fold), None)
    if choice is None or seed is not None or kind is not None:
        return _from_result(layout, fold, seed, kind, choice)
    at = lambda name: layout.inside(choice.artifacts[name], layout.best_config, layout.best_dir).parent
    net = at("weights") if "weights" in choice.artifacts else None  # none from a features table
    selection = _selection(layout, fold, choice.seed, net, at("corrector"), choice.class_names)
    return dataclasses.replace(selection, net_sha256=choice.net_sha256)


def _from_result(layout: RunLayout, fold: str, seed: int | None, kind: str | None,
                 choice: FoldChoice | None) -> Selection:
    """The net and corrector that fold x seed's result names (seed: the given one, else best's)."""
    results = [TrialResult.read(p) for p in layout.result_files(fold)]
    if not results:
        raise CorrectsweepError(f"fold {fold} has no result in {layout.root / 'results'}; run "
                                f"`correctsweep trial SPEC --fold {fold}` first")
    seeds = sorted({r.seed for r in results})
    if seed is None:
        if choice is None:
            raise CorrectsweepError(f"{layout.root} has no best/ selection for fold {fold}; run `correctsweep best "
                                    f"{layout.root}` or give --seed (seeds with results: {seeds})")
        seed = choice.seed
    ofseed = [r for r in results if r.seed == seed]
    if not ofseed:
        raise CorrectsweepError(f"fold {fold} has no result for seed {seed}; seeds with results: {seeds}")
    # a `search` leaves one result per base-net sample: best's, else the best cross-validated one (as collect)
    chosen = [r for r in ofseed if choice is not None and r.net_key == choice.net_key] or \
        sorted(ofseed, key=lambda r: r.corrector.cv_score)[-1:]
    result = chosen[0]
    kind = kind or result.corrector.kind
    if kind not in result.paths.correctors:
        raise CorrectsweepError(f"fold {fold} seed {seed} searched no {kind} corrector (it searched "
                                f"{', '.join(result.paths.correctors)}); pick one of those with --kind")
    where = f"the result of fold {fold} seed {seed}"
    net = layout.inside(result.paths.model, where) if result.paths.model else None  # none from a features table
    selection = _selection(layout, fold, seed, net, layout.inside(result.paths.correctors[kind], where),
                           result.class_names)
    return dataclasses.replace(selection, net_sha256=_fitted_on(layout, result))


def _fitted_on(layout: RunLayout, result: TrialResult) -> str:
    """The SHA-256 of the net whose taps the fold x seed's correctors were fitted on, as its `correct` features
    file records it ("" where the run holds no features, e.g. a shipped run)."""
    path = layout.features_file(result.fold, result.seed, "correct", result.features_key)
    try:
        return str(read_meta(path).get("weights_sha256", "")) if path.is_file() else ""
    except (OSError, ValueError) as e:
        raise CorrectsweepError(f"{path} is unreadable ({str(e)[:60]}); {_rerun(result.fold, result.seed)}") from None


def _selection(layout: RunLayout, fold: str, seed: int, net_dir: Path | None, corrector_dir: Path,
               class_names: list[str]) -> Selection:
    try:
        record = read_record(corrector_dir)
    except CorrectsweepError as e:
        raise CorrectsweepError(f"{e}; {_rerun(fold, seed)}") from None
    return Selection(layout.root, fold, seed, net_dir, corrector_dir, record, class_names)


@dataclass
class Outputs:
    """What h made of a batch of images."""

    pred_f: np.ndarray
    """int64 [n]: f's labels."""
    pred_h: np.ndarray
    """int64 [n]: h's labels."""
    proba: np.ndarray
    """float [n, K]: g's probabilities, columns in `classes` order."""


class CorrectedClassifier:
    """A fold's h, loaded and checked (see `entry.load_corrected`)."""

    def __init__(self, selection: Selection, spec: Spec, device: str = "auto"):
        self.selection = selection
        self.spec = spec
        self.device = pick_device(device, "--device")
        self.net, meta = load_model(selection.net_dir, self.device)
        try:  # channels: 1 (grayscale, so colour inputs are converted) or 3, as f was trained
            self.channels = int(meta["channels"])
            trained_for = (list(meta["classes"]), meta["excluded"])
        except (KeyError, TypeError, ValueError):
            raise CorrectsweepError(f"net {selection.net_dir} has a model.json without the classes and channels this "
                                    f"version reads; {_rerun(selection.fold, selection.seed)}") from None
        if selection.net_sha256 and meta["weights_sha256"] != selection.net_sha256:
            raise CorrectsweepError(f"net {selection.net_dir} is not the net fold {selection.fold}'s corrector was "
                                    "fitted on (its record names other weights); rerun `correctsweep best`, or the "
                                    "trial")
        if trained_for != (selection.record.classes, selection.excluded):
            raise CorrectsweepError(f"net {selection.net_dir} was trained for classes {trained_for[0]} without "
                                    f"{trained_for[1]}, not for fold {selection.fold}; rerun `correctsweep best`")
        try:
            self.corrector, self.projection = load_corrector(selection.corrector_dir, selection.record)
        except CorrectsweepError as e:
            raise CorrectsweepError(f"{e}; {_rerun(selection.fold, selection.seed)}") from None
        # the taps the features file holds, read in one pass as extraction read them (see the module docstring)
        self.extracted = list(spec.features.taps or self.net.default_taps())

    @property
    def classes(self) -> list[int]:
        return self.selection.record.classes

    @property
    def class_names(self) -> list[str]:
        return self.selection.class_names

    @property
    def image_size(self) -> int:
        return self.spec.data.image_size

    @property
    def batch_size(self) -> int:
        return self.spec.features.batch_size

    def as_batch(self, images) -> torch.Tensor:
        """Images as the net is fed them, uint8 [N, C, S, S]: from a uint8 array or tensor [N, H, W] or
        [N, C, H, W] (C 1 or 3), or a list of Pillow images, paths or encoded bytes."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8:
                raise CorrectsweepError(f"images are {images.dtype}; give uint8 pixel values 0..255")
            if 0 in images.shape:
                raise CorrectsweepError(f"images of shape {images.shape} hold no pixels")
            if images.ndim == 3 and (images.shape[0] in (1, 3) or images.shape[2] in (1, 3, 4)):
                # one HxWxC or CxHxW image, or a few grayscale ones: guessing which would give wrong labels
                raise CorrectsweepError(f"images of shape {images.shape} are ambiguous; give a batch [N, C, H, W] "
                                        "(one image: image[None], channels first) or N grayscale images [N, H, W]")
            if images.ndim == 3:
                images = images[:, None]
            if images.ndim != 4 or images.shape[1] not in (1, 3):
                raise CorrectsweepError(f"images of shape {images.shape} cannot be mapped to this run's "
                                        f"{self.channels}-channel input; give [N, H, W] or [N, C, H, W] with C 1 or 3")
            images = list(images)
        if not len(images):
            raise CorrectsweepError("no images given")
        ids = [str(image) if isinstance(image, (str, Path)) else str(i) for i, image in enumerate(images)]
        blobs = [read_file(Path(image)) if isinstance(image, (str, Path)) else image for image in images]
        return decode_batch(blobs, ids, self.image_size, False, self.channels == 1)[0]

    def run(self, batch: torch.Tensor) -> Outputs:
        """h on uint8 [N, C, S, S] images at the run's size (`as_batch`)."""
        record = self.selection.record
        index, taps = extract(self.net, batch, self.extracted, False, self.batch_size, self.device)
        pred_f = np.asarray(self.classes)[index]
        fs = FeatureSet(np.arange(len(batch)).astype(str), pred_f, pred_f, taps, {})
        proba = self.corrector.predict_proba(corrector_inputs(fs, record.taps, self.projection)[0])
        pred_h = apply_policy(proba, pred_f, self.classes, record.policy, record.tau,
                              self.selection.excluded).astype(np.int64)
        return Outputs(pred_f, pred_h, proba)

    def inputs(self, text: str, size: int) -> tuple[int, Iterator[Chunk]]:
        """INPUT as (count, chunks of `size`), see `read_input`."""
        return read_input(text, self, size)

    def predict(self, images) -> np.ndarray:
        """h's labels."""
        return self.run(self.as_batch(images)).pred_h

    def predict_proba(self, images) -> np.ndarray:
        """g's probabilities [N, K], columns in `classes` order."""
        return self.run(self.as_batch(images)).proba

    def explain(self, images, ids=None) -> pd.DataFrame:
        """Per image: f's and h's labels and names, whether g changed f's answer, g's probability of h's
        label and of the excluded class, and whether h says "the class f never saw" (`predict`'s columns)."""
        batch = self.as_batch(images)
        return self.table(self.run(batch), ids if ids is not None else [str(i) for i in range(len(batch))])

    def table(self, out: Outputs, ids, labels=None) -> pd.DataFrame:
        names, column = dict(zip(self.classes, self.class_names)), {c: i for i, c in enumerate(self.classes)}
        excluded = self.selection.excluded
        frame = {"id": [str(i) for i in ids]}
        if labels is not None:
            frame["label"] = np.asarray(labels, dtype=np.int64)
        frame |= {  # OUTPUT_COLUMNS
            "pred_f": out.pred_f, "name_f": [names[c] for c in out.pred_f],
            "pred_h": out.pred_h, "name_h": [names[c] for c in out.pred_h],
            "changed": out.pred_h != out.pred_f,
            "p_h": out.proba[np.arange(len(out.pred_h)), [column[c] for c in out.pred_h]].astype(np.float32),
            "p_excluded": (out.proba[:, column[excluded]] if excluded is not None
                           else np.full(len(out.pred_h), np.nan)).astype(np.float32),
            "unseen": out.pred_h == excluded if excluded is not None else np.zeros(len(out.pred_h), dtype=bool)}
        return pd.DataFrame(frame)


def run_spec(run_dir: Path) -> Spec:
    spec_file = RunLayout(run_dir).spec_file
    if not spec_file.is_file():
        raise CorrectsweepError(f"{run_dir} has no spec.yaml; rerun one trial of its spec to write it")
    return load_spec(spec_file, stored=True)


def run_dataset(spec: Spec):
    """The run's dataset, from the decoded-data cache where the trials left it."""
    return load_dataset(spec.data, cache_dir=RunLayout.cache_dir(spec))


# ---------------------------------------------------------------- the command: a loop over batches


@dataclass
class Chunk:
    ids: list[str]
    images: object
    """Encoded bytes or Unreadable per image (decoded here), a decoded uint8 batch [n, C, S, S], or a table run's
    rows (from_features.FeatureRows)."""
    labels: np.ndarray | None = None
    """True labels, where the input has them (a split of the run's dataset)."""


def read_input(text: str, clf: CorrectedClassifier, size: int) -> tuple[int, Iterator[Chunk]]:
    """INPUT as (image count, chunks of `size` images): split:NAME, a folder of images (recursive), one
    image file, or a Parquet table (or a folder of them) with an `image` column of encoded bytes."""
    if text.startswith("split:"):
        name = text.split(":", 1)[1]
        if name not in SPLITS:
            raise CorrectsweepError(f"INPUT {text}: the run's splits are {', '.join('split:' + s for s in SPLITS)}")
        ds = run_dataset(clf.spec)
        splits = make_splits(ds, clf.spec.data)
        _check_split(clf.selection, ds.ids[splits["test"]])
        idx = splits[name]
        return len(idx), (Chunk(list(ds.ids[i]), ds.images[torch.from_numpy(i)], ds.labels[i])
                          for i in np.array_split(idx, range(size, len(idx), size)))
    path = Path(text)
    if not path.exists():
        raise CorrectsweepError(f"INPUT {path} does not exist; give a folder of images, an image, a .parquet "
                                "table or split:test")
    if path.is_file() and path.suffix.lower() != ".parquet":
        files = [path]
    else:
        files = image_files(path) if path.is_dir() else []
    if files:
        base = path if path.is_dir() else path.parent
        return len(files), (Chunk([str(f.relative_to(base)) for f in part], [read_file(f) for f in part])
                            for part in (files[i:i + size] for i in range(0, len(files), size)))
    tables = parquet_files(path)
    if not tables:
        raise CorrectsweepError(f"INPUT {path} holds no image ({', '.join(sorted(image_suffixes())[:6])}, ...) "
                                "and no .parquet table")
    dataset = image_dataset(tables, f"INPUT {path}")
    columns = ["image"] + (["source_name"] if "source_name" in dataset.schema.names else [])

    def chunks():
        start = 0
        for batch in dataset.to_batches(columns=columns, batch_size=size):
            yield Chunk(sample_ids(batch, start), image_bytes(batch.column("image")))
            start += batch.num_rows
    return dataset.count_rows(), chunks()


def _check_split(selection: Selection, test_ids: np.ndarray) -> None:
    """A one-line error when the run's split, drawn again from data.path, is not the one the run recorded (its
    test images): data added or removed since would put images f trained on, or g was fitted on, in any split."""
    recorded = RunLayout(selection.run_dir).predictions_files(selection.fold, selection.seed, "test")
    if not recorded:
        return  # a shipped run (spec.yaml and best/ only): nothing to compare with
    try:
        ids = set(pd.read_parquet(recorded[0], columns=["sample_id"]).sample_id)
    except (OSError, ValueError) as e:
        raise CorrectsweepError(f"{recorded[0]} is unreadable ({str(e)[:60]}); {_rerun(selection.fold, selection.seed)}"
                                ) from None
    if ids != set(test_ids):
        raise CorrectsweepError(f"the data at data.path is not what the run split: {len(set(test_ids) - ids)} of the "
                                f"{len(test_ids)} images drawn for split:test now are not the run's test images (data "
                                "added or removed since?); predict the images themselves (a folder or a table)")


def _decoded(chunk: Chunk, clf: CorrectedClassifier) -> tuple[Chunk, int]:
    """The chunk's images decoded, channel-mapped and resized; corrupt ones skipped and counted, or refused
    (the run's data.skip_corrupt)."""
    if not isinstance(chunk.images, list):  # decoded already, or rows of features
        return chunk, 0
    images, keep = decode_batch(chunk.images, chunk.ids, clf.image_size, clf.spec.data.skip_corrupt,
                                clf.channels == 1)
    return Chunk([i for i, kept in zip(chunk.ids, keep) if kept], images), int((~keep).sum())


class _Writer:
    """Rows written batch by batch to a Parquet or (by the suffix) CSV file."""

    def __init__(self, tmp: str, csv: bool):
        self.tmp, self.csv, self.writer = tmp, csv, None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = (pacsv.CSVWriter(self.tmp, table.schema) if self.csv
                           else pq.ParquetWriter(self.tmp, table.schema, compression="zstd"))
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class PredictSummary:
    out: Path
    images: int
    skipped: int
    changed: int
    unseen: int
    seconds: float


def predict_file(clf: CorrectedClassifier, input_text: str, out: Path, log=print,
                 force: bool = False) -> PredictSummary:
    """`correctsweep predict`: h on every image of INPUT, streamed batch by batch into `out` (Parquet, or
    CSV for a .csv suffix), which appears only once every batch is written (see check_out)."""
    out = Path(out)
    check_out(out, clf.selection.run_dir, force, OUTPUT_COLUMNS)
    total, chunks = clf.inputs(input_text, clf.batch_size)
    started = last = time.perf_counter()
    done = skipped = changed = unseen = 0
    with atomic_path(out) as tmp:
        writer = _Writer(tmp, out.suffix.lower() == ".csv")
        try:
            for chunk in chunks:
                chunk, bad = _decoded(chunk, clf)
                skipped += bad
                if len(chunk.ids):
                    frame = clf.table(clf.run(chunk.images), chunk.ids, chunk.labels)
                    writer.write(frame)
                    done, changed, unseen = done + len(frame), changed + int(frame.changed.sum()), \
                        unseen + int(frame.unseen.sum())
                if time.perf_counter() - last >= PROGRESS_SECONDS:
                    last = time.perf_counter()
                    log(f"predict: {done + skipped:,} of {total:,} images ({done / (last - started):.0f}/s)")
        finally:
            writer.close()
        if not done:
            raise DataError(f"no image of {input_text} could be decoded ({skipped} corrupt)")
    return PredictSummary(out, done, skipped, changed, unseen, time.perf_counter() - started)


def main(args, clf: CorrectedClassifier) -> None:
    """The predict sub-command (cli.py parses its arguments and loads `clf`, `entry.load_corrected`)."""
    sel, record = clf.selection, clf.selection.record
    c = record.certificate
    bound = "" if c is None else (f" (certified: {c.harm_measure} Harm at most {c.max_harm} with probability "
                                  f"{c.confidence})" if c.corrects else f" (no tau certified {c.harm_measure} Harm at "
                                  f"most {c.max_harm}: h = f)")
    print(f"fold {sel.fold} seed {sel.seed}: {record.kind} corrector, {record.policy} at tau {record.tau:.3f}{bound}, "
          f"on {clf.device.type}", flush=True)
    s = predict_file(clf, args.input, Path(args.out), lambda m: print(m, flush=True), args.force)
    print(f"{s.out}: {s.images} images, {s.changed} changed by g, {s.unseen} flagged as the class f never saw"
          + (f", {s.skipped} skipped as corrupt" if s.skipped else "") + f" ({s.images / s.seconds:.0f}/s)")
