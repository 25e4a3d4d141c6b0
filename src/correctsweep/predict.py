"""Apply what the sweep selected: one fold's corrected classifier h = f corrected by g, on new images.

`locate` finds a fold's net and corrector in a run directory: by default the ones `correctsweep best`
copied into best/ for the fold; with a seed or another kind searched in that fold, the fold x seed's
result names them (`TrialResult.paths`). `CorrectedClassifier` loads and checks them (the net against
its SHA-256, the corrector by a load that fails in one line) and runs h on images decoded, channel-mapped
and resized as training fed them (`data.decode_resized`). `predict_file` is `correctsweep predict`: a
loop over batches of the input calling the classifier, written to a temporary file renamed at the end.

h reproduces the run's own figures exactly because it takes the very path the trial took: the net
runs over `features.batch_size` images at a time and reads the same taps the features file holds (the
paper net computes its attention differently when its weights are not asked for, so asking for fewer
taps would move the floats), pools them with `features.pool_taps`, and g sees them through the saved
projection, then `policy.apply_policy`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import yaml

from correctsweep.atomic import atomic_path
from correctsweep.config import Spec, load_spec
from correctsweep.data import decode_resized, fold_of, load_dataset, make_splits
from correctsweep.errors import CorrectsweepError, DataError, SpecError
from correctsweep.features import FeatureSet, extract
from correctsweep.kinds import Model, corrector_inputs
from correctsweep.layout import RunLayout
from correctsweep.plugins import KINDS
from correctsweep.policy import apply_policy
from correctsweep.projection import Projection
from correctsweep.results import TrialResult
from correctsweep.sources import read_file
from correctsweep.sources.folder import image_suffixes
from correctsweep.train import load_model, pick_device

SPLITS = ("train", "val", "correct", "test")
PROGRESS_SECONDS = 5.0  # a progress line at most this often on large inputs


@dataclass(frozen=True)
class Selection:
    """One fold's corrected classifier as a run directory holds it."""

    run_dir: Path
    fold: str
    seed: int
    kind: str
    net_dir: Path
    """weights.pt and model.json: `train.load_model` reads them."""
    corrector_dir: Path
    """The kind's model file, best.json and, with compact embeddings, projection.npz."""
    classes: list[int]
    class_names: list[str]
    excluded: int | None
    taps: list[str]
    """The taps g reads, in the order it stacks them."""
    pca_dims: int | None
    policy: str
    tau: float


def run_root(path: str | Path) -> Path:
    """The run directory of RUN_DIR or RUN_DIR/best."""
    path = Path(path)
    return path.parent if path.name == "best" and (path / "best_config.yaml").is_file() else path


def locate(path: str | Path, fold, seed: int | None = None, kind: str | None = None) -> Selection:
    """The corrected classifier of `fold` (a label, a class name or 'none'): best's choice, or with `seed`
    or `kind` the one that fold x seed's search of that kind published (seed: best's, unless given)."""
    run_dir = run_root(path)
    layout = RunLayout(run_dir)
    best_file = layout.best_dir / "best_config.yaml"
    results = layout.result_files()
    if not results and not best_file.is_file():
        raise CorrectsweepError(f"{run_dir} has no results/ and no best/; give a run directory after "
                                "`correctsweep trial` (or `sweep`) and `correctsweep best`")
    entries = yaml.safe_load(best_file.read_text())["folds"] if best_file.is_file() else []
    some = entries[0] if entries else TrialResult.read(results[0]).to_dict()
    fold = fold_of(fold, dict(zip(some["classes"], some["class_names"])))
    entry = next((e for e in entries if e["fold"] == fold), None)
    if entry is not None and seed is None and kind is None:
        best = layout.best_dir
        found = {"net": best / Path(entry["artifacts"]["weights"]).parent,
                 "corrector": best / Path(entry["artifacts"]["corrector"]).parent, "seed": entry["seed"]}
    else:
        found = _from_result(layout, fold, seed, kind, entry)
    return _selection(run_dir, fold, found, some)


def _from_result(layout: RunLayout, fold: str, seed: int | None, kind: str | None, entry: dict | None) -> dict:
    """The net and corrector that fold x seed's result names (seed: the given one, else best's)."""
    mine = [p for p in layout.result_files() if p.relative_to(layout.root / "results").parts[0] == f"fold={fold}"]
    if not mine:
        raise CorrectsweepError(f"fold {fold} has no result in {layout.root / 'results'}; run "
                                f"`correctsweep trial SPEC --fold {fold}` first")
    results = [TrialResult.read(p) for p in mine]
    seeds = sorted({r.seed for r in results})
    if seed is None:
        if entry is None:
            raise CorrectsweepError(f"{layout.root} has no best/ selection for fold {fold}; run `correctsweep best "
                                    f"{layout.root}` or give --seed (seeds with results: {seeds})")
        seed = entry["seed"]
    ofseed = [r for r in results if r.seed == seed]
    if not ofseed:
        raise CorrectsweepError(f"fold {fold} has no result for seed {seed}; seeds with results: {seeds}")
    # a `search` leaves one result per base-net sample: best's, else the best cross-validated one (as collect)
    chosen = [r for r in ofseed if entry is not None and r.net_key == entry["net_key"]] or \
        sorted(ofseed, key=lambda r: r.corrector.cv_score)[-1:]
    result = chosen[0]
    workdirs = result.paths.correctors or {result.corrector.kind: result.paths.corrector}
    kind = kind or result.corrector.kind
    if kind not in workdirs:
        raise CorrectsweepError(f"fold {fold} seed {seed} searched no {kind} corrector (it searched "
                                f"{', '.join(workdirs)}); pick one of those with --kind")
    return {"net": layout.root / result.paths.model, "corrector": layout.root / workdirs[kind], "seed": seed}


def _selection(run_dir: Path, fold: str, found: dict, names: dict) -> Selection:
    config = found["corrector"] / "best.json"
    try:
        best = json.loads(config.read_text())
        return Selection(run_dir, fold, int(found["seed"]), best["kind"], found["net"],
                         found["corrector"], [int(c) for c in best["classes"]], list(names["class_names"]),
                         None if fold == "none" else int(fold), list(best["taps"]), best.get("pca_dims"),
                         best["policy"], float(best["tau"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorrectsweepError(f"corrector {config} is unreadable ({str(e).splitlines()[0][:80]}); rerun "
                                f"`correctsweep trial` for fold {fold} seed {found['seed']}") from None


def load_corrector(selection: Selection) -> tuple[Model, Projection | None]:
    """g and the compact-embedding basis it saw, each load failing in one line naming the file."""
    try:
        kind = KINDS.get(selection.kind)
    except SpecError:
        raise CorrectsweepError(f"corrector {selection.corrector_dir} is of kind {selection.kind!r}, which this "
                                f"installation lacks (it has {', '.join(KINDS.names())})") from None
    try:
        model = kind.load(selection.corrector_dir)
        projection = Projection.load(selection.corrector_dir / "projection.npz") if selection.pca_dims else None
    except Exception as e:  # noqa: BLE001 -- xgboost, numpy and zipfile raise their own on a broken file
        raise CorrectsweepError(f"corrector {selection.corrector_dir} does not load ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:80] if str(e) else 'no detail'}); rerun `correctsweep "
                                f"trial` for fold {selection.fold} seed {selection.seed}") from None
    return model, projection


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
    """A fold's h, loaded and checked (see `load_corrected`)."""

    def __init__(self, selection: Selection, spec: Spec, device: str = "auto"):
        self.selection = selection
        self.spec = spec
        self.device = pick_device(device, "--device")
        self.net, meta = load_model(selection.net_dir, self.device)
        # nets saved before model.json recorded it: the run's dataset (its decoded cache) knows
        self.channels = int(meta.get("channels") or run_dataset(spec, selection.run_dir).images.shape[1])
        """The channels f was trained on: 1 (grayscale, so colour inputs are converted) or 3."""
        if list(meta["classes"]) != selection.classes or meta["excluded"] != selection.excluded:
            raise CorrectsweepError(f"net {selection.net_dir} was trained for classes {meta['classes']} without "
                                    f"{meta['excluded']}, not for fold {selection.fold}; rerun `correctsweep best`")
        self.corrector, self.projection = load_corrector(selection)
        # the taps the features file holds, read in one pass as extraction read them (see the module docstring)
        self.extracted = list(spec.features.taps or self.net.default_taps())

    @property
    def classes(self) -> list[int]:
        return self.selection.classes

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
            if images.ndim == 3:
                images = images[:, None]
            if images.ndim != 4 or images.shape[1] not in (1, 3):
                raise CorrectsweepError(f"images of shape {images.shape} cannot be mapped to this run's "
                                        f"{self.channels}-channel input; give [N, H, W] or [N, C, H, W] with C 1 or 3")
            images = list(images)
        out = []
        for i, image in enumerate(images):
            blob = read_file(Path(image)) if isinstance(image, (str, Path)) else image
            try:
                out.append(decode_resized(blob, self.channels == 1, self.image_size))
            except ValueError as e:
                raise DataError(f"image {i} ({image if isinstance(image, (str, Path)) else type(image).__name__}) "
                                f"cannot be decoded ({e})") from None
        if not out:
            raise CorrectsweepError("no images given")
        return torch.stack(out)

    def run(self, batch: torch.Tensor) -> Outputs:
        """h on uint8 [N, C, S, S] images at the run's size (`as_batch`)."""
        sel = self.selection
        index, taps = extract(self.net, batch, self.extracted, False, self.batch_size, self.device)
        pred_f = np.asarray(self.classes)[index]
        fs = FeatureSet(np.arange(len(batch)).astype(str), pred_f, pred_f, taps, {})
        proba = self.corrector.predict_proba(corrector_inputs(fs, sel.taps, self.projection)[0])
        pred_h = apply_policy(proba, pred_f, self.classes, sel.policy, sel.tau, sel.excluded).astype(np.int64)
        return Outputs(pred_f, pred_h, proba)

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
        frame |= {
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


def run_dataset(spec: Spec, run_dir: Path):
    """The run's dataset, from the decoded-data cache beside the run (where the trials left it)."""
    return load_dataset(spec.data, cache_dir=spec.data.cache_dir or run_dir.parent / ".cache")


def load_corrected(path: str | Path, fold, seed: int | None = None, kind: str | None = None,
                   device: str = "auto") -> CorrectedClassifier:
    """The corrected classifier h of `fold` in a run directory (RUN_DIR or RUN_DIR/best): best's choice, or
    fold x `seed`'s corrector of `kind`. Needs the run directory's spec.yaml, the net and the corrector,
    not the data it was trained on."""
    selection = locate(path, fold, seed, kind)
    return CorrectedClassifier(selection, run_spec(selection.run_dir), device)


# ---------------------------------------------------------------- the command: a loop over batches


@dataclass
class Chunk:
    ids: list[str]
    images: list | torch.Tensor
    """Encoded bytes or Unreadable per image (decoded here), or a decoded uint8 batch [n, C, S, S]."""
    labels: np.ndarray | None = None
    """True labels, where the input has them (a split of the run's dataset)."""


def read_input(text: str, clf: CorrectedClassifier, size: int) -> tuple[int, Iterator[Chunk]]:
    """INPUT as (image count, chunks of `size` images): split:NAME, a folder of images (recursive), one
    image file, or a Parquet table (or a folder of them) with an `image` column of encoded bytes."""
    if text.startswith("split:"):
        name = text.split(":", 1)[1]
        if name not in SPLITS:
            raise CorrectsweepError(f"INPUT {text}: the run's splits are {', '.join('split:' + s for s in SPLITS)}")
        ds = run_dataset(clf.spec, clf.selection.run_dir)
        idx = make_splits(ds, clf.spec.data)[name]
        return len(idx), (Chunk(list(ds.ids[i]), ds.images[torch.from_numpy(i)], ds.labels[i])
                          for i in np.array_split(idx, range(size, len(idx), size)))
    path = Path(text)
    if not path.exists():
        raise CorrectsweepError(f"INPUT {path} does not exist; give a folder of images, an image, a .parquet "
                                "table or split:test")
    suffixes = image_suffixes()
    if path.is_file() and path.suffix.lower() != ".parquet":
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                       and not any(p.startswith(".") for p in f.relative_to(path).parts))
    else:
        files = []
    if files:
        base = path if path.is_dir() else path.parent
        return len(files), (Chunk([str(f.relative_to(base)) for f in part], [read_file(f) for f in part])
                            for part in (files[i:i + size] for i in range(0, len(files), size)))
    tables = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not tables:
        raise CorrectsweepError(f"INPUT {path} holds no image ({', '.join(sorted(suffixes)[:6])}, ...) and no "
                                ".parquet table")
    return _parquet_chunks(path, tables, size)


def _parquet_chunks(path: Path, tables: list[Path], size: int) -> tuple[int, Iterator[Chunk]]:
    import pyarrow.dataset as pads

    try:
        dataset = pads.dataset([str(t) for t in tables], format="parquet")
        names = dataset.schema.names
        rows = dataset.count_rows()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise CorrectsweepError(f"INPUT {path} is not readable as Parquet ({str(e).splitlines()[0][:80]})") from None
    image_type = dataset.schema.field("image").type if "image" in names else None
    if image_type is None or not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)):
        raise CorrectsweepError(f"INPUT {path} needs a column `image` of encoded image bytes, like the parquet "
                                "source's tables")
    if not rows:
        raise CorrectsweepError(f"INPUT {path} has no rows")
    ids = "source_name" if "source_name" in names else None

    def chunks():
        start = 0
        for batch in dataset.to_batches(columns=["image"] + ([ids] if ids else []), batch_size=size):
            n = batch.num_rows
            yield Chunk([str(i) for i in batch.column(ids).to_pylist()] if ids else
                        [f"row-{start + i:07d}" for i in range(n)], batch.column("image").to_pylist())
            start += n
    return rows, chunks()


def _decoded(chunk: Chunk, clf: CorrectedClassifier, skip_corrupt: bool) -> tuple[Chunk, int]:
    """The chunk's images decoded, channel-mapped and resized; corrupt ones skipped and counted, or refused."""
    if isinstance(chunk.images, torch.Tensor):
        return chunk, 0
    kept, ids = [], []
    for i, blob in zip(chunk.ids, chunk.images):
        try:
            kept.append(decode_resized(blob, clf.channels == 1, clf.image_size))
            ids.append(i)
        except ValueError as e:
            if not skip_corrupt:
                raise DataError(f"image '{i}' cannot be decoded ({e}); fix or remove it (the run's "
                                "data.skip_corrupt is false, so predict refuses it)") from None
    images = torch.stack(kept) if kept else torch.empty(0, clf.channels, clf.image_size, clf.image_size,
                                                         dtype=torch.uint8)
    return Chunk(ids, images), len(chunk.ids) - len(ids)


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


def predict_file(clf: CorrectedClassifier, input_text: str, out: Path, log=print) -> PredictSummary:
    """`correctsweep predict`: h on every image of INPUT, streamed batch by batch into `out` (Parquet, or
    CSV for a .csv suffix), which appears only once every batch is written."""
    out = Path(out)
    if not out.parent.is_dir():
        raise CorrectsweepError(f"--out {out}: folder {out.parent} does not exist; create it or write elsewhere")
    total, chunks = read_input(input_text, clf, clf.batch_size)
    started = last = time.perf_counter()
    done = skipped = changed = unseen = 0
    with atomic_path(out) as tmp:
        writer = _Writer(tmp, out.suffix.lower() == ".csv")
        try:
            for chunk in chunks:
                chunk, bad = _decoded(chunk, clf, clf.spec.data.skip_corrupt)
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


def main(args) -> None:
    """The predict sub-command (cli.py parses its arguments)."""
    clf = load_corrected(args.run_dir, args.fold, args.seed, args.kind, args.device)
    sel = clf.selection
    print(f"fold {sel.fold} seed {sel.seed}: {sel.kind} corrector, {sel.policy} at tau {sel.tau:.3f}, "
          f"on {clf.device.type}", flush=True)
    s = predict_file(clf, args.input, Path(args.out), log=lambda m: print(m, flush=True))
    print(f"{s.out}: {s.images} images, {s.changed} changed by g, {s.unseen} flagged as the class f never saw"
          + (f", {s.skipped} skipped as corrupt" if s.skipped else "") + f" ({s.images / s.seconds:.0f}/s)")
