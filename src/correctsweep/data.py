"""Datasets and the three-way split.

Every source ends as one in-memory `Dataset`: uint8 images [N, C, S, S] (C = 1 for grayscale sets,
3 for colour), labels in RAF-DB numbering (1 Surprise ... 7 Neutral) and a sample id per image.
Decoding happens once per (source, files, image size); the result is cached on disk as an .npz so
a second run, or another fold of the same sweep, loads it in a second.
"""

from __future__ import annotations

import csv
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import torch
import torch.nn.functional as F
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image

from correctsweep import synthetic
from correctsweep.atomic import atomic_path
from correctsweep.config import DataConfig, digest
from correctsweep.errors import DataError

CLASS_NAMES = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}
# FER2013's own codes: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
FER2013_TO_RAFDB = {0: 6, 1: 3, 2: 2, 3: 4, 4: 5, 5: 1, 6: 7}
FER2013_USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
# Folder names understood by the `folder` source, besides the label numbers themselves.
FOLDER_NAMES = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "happiness": 4, "sad": 5,
                "sadness": 5, "angry": 6, "anger": 6, "neutral": 7}
MIN_PER_CLASS = 8  # one image at least in each of train, val, correct and test, with room to stratify


@dataclass
class Dataset:
    images: torch.Tensor
    """uint8 [N, C, S, S]."""
    labels: np.ndarray
    """int64 [N], RAF-DB numbering."""
    ids: np.ndarray
    """str [N], unique sample ids (file names or row numbers)."""
    split: np.ndarray
    """str [N], the dataset's own split column ('' where it has none)."""
    skipped: int = 0
    """Images that failed to decode and were skipped (data.skip_corrupt)."""

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))


def class_name(label: int) -> str:
    return CLASS_NAMES.get(int(label), str(label))


def class_indices(labels: np.ndarray, classes: list[int], where: str) -> np.ndarray:
    """Each label's position in the sorted `classes` (0..K-1), the index the net and the corrector train on; a
    label outside `classes` is an error naming `where` it came from. (metrics maps unlisted labels to
    a bin of their own instead: a prediction may be any label.)"""
    labels = np.asarray(labels)
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} in {where} are not among the classes {list(classes)}")
    return np.searchsorted(np.asarray(classes), labels).astype(np.int64)


# ---------------------------------------------------------------- raw records per source
# Each reader returns (encoded image bytes or decoded uint8 arrays, labels, ids, split).


def _read_parquet(path: Path):
    if not path.exists():
        raise DataError(f"parquet data '{path}' not found; set data.path to a .parquet file or folder")
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
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
                        "expected image (bytes), label (1..7), split, source_name")
    label = table.column("label")
    if not pa.types.is_integer(label.type) or label.null_count:
        raise DataError(f"parquet data '{path}': column label must be integers 1..7 without nulls, "
                        f"got {label.type} with {label.null_count} null(s)")
    n = table.num_rows
    ids = (table.column("source_name").to_pylist() if "source_name" in table.column_names
           else [f"row-{i:07d}" for i in range(n)])
    split = table.column("split").to_pylist() if "split" in table.column_names else [""] * n
    return table.column("image").to_pylist(), np.asarray(table.column("label").to_pylist()), ids, split


def _read_rafdb(path: Path):
    label_file = path / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise DataError(f"RAF-DB label file '{label_file}' not found; data.path must be RAF-DB's basic/ folder")
    blobs, labels, ids, split = [], [], [], []
    for lineno, line in enumerate(label_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{label_file}:{lineno}: expected '<name>.jpg <label>', got {line!r}")
        name = parts[0]
        image = path / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
        if not image.is_file():
            raise DataError(f"RAF-DB image '{image}' (listed at {label_file}:{lineno}) not found")
        blobs.append(image.read_bytes())
        labels.append(int(parts[1]))
        ids.append(name)
        split.append(name.split("_")[0])
    return blobs, np.asarray(labels), ids, split


def _read_fer2013(path: Path):
    if not path.is_file():
        raise DataError(f"fer2013 CSV '{path}' not found; set data.path to Kaggle's fer2013.csv")
    arrays, labels, ids, split = [], [], [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not a column
            for row_no, row in enumerate(_fer2013_rows(fh, path), 2):
                arrays.append(_fer2013_pixels(row, path, row_no))
                labels.append(FER2013_TO_RAFDB[_fer2013_code(row, path, row_no)])
                ids.append(f"fer2013-{row_no - 2:05d}")
                split.append(FER2013_USAGE.get(row.get("Usage", ""), ""))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"'{path}' is not a text CSV ({str(e)[:80]}); check data.source and data.path") from None
    return arrays, np.asarray(labels), ids, split


def _fer2013_rows(fh, path: Path):
    reader = csv.DictReader(fh)
    if not {"emotion", "pixels"} <= set(reader.fieldnames or ()):
        raise DataError(f"'{path}' lacks the columns emotion,pixels(,Usage) of Kaggle's fer2013.csv")
    return reader


def _fer2013_code(row: dict, path: Path, row_no: int) -> int:
    code = int(row["emotion"]) if (row["emotion"] or "").strip().isdigit() else -1
    if code not in FER2013_TO_RAFDB:
        raise DataError(f"{path}:{row_no}: emotion {row['emotion']!r} is not a FER2013 code 0..6")
    return code


def _fer2013_pixels(row: dict, path: Path, row_no: int) -> np.ndarray:
    try:
        pixels = np.asarray((row["pixels"] or "").split(), dtype=np.float32)
    except ValueError:
        raise DataError(f"{path}:{row_no}: pixels must be space-separated numbers 0..255") from None
    side = int(round(len(pixels) ** 0.5))
    if not len(pixels) or side * side != len(pixels) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}:{row_no}: pixels are not a square 8-bit image ({len(pixels)} values)")
    return pixels.astype(np.uint8).reshape(1, side, side)


def _read_folder(path: Path):
    if not path.is_dir():
        raise DataError(f"image folder '{path}' not found; set data.path to a folder with one sub-folder per class")
    blobs, labels, ids = [], [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        key = sub.name.lower()
        label = int(key) if key.isdigit() else FOLDER_NAMES.get(key)
        if label is None:
            raise DataError(f"class folder '{sub}' is neither a label number nor one of "
                            f"{', '.join(sorted(FOLDER_NAMES))}")
        files = sorted(f for f in sub.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DataError(f"class folder '{sub}' holds no images; remove it or add images")
        blobs += [f.read_bytes() for f in files]
        labels += [label] * len(files)
        ids += [str(f.relative_to(path)) for f in files]
    if not blobs:
        raise DataError(f"image folder '{path}' has no class sub-folders")
    return blobs, np.asarray(labels), ids, [""] * len(ids)


READERS = {"parquet": _read_parquet, "rafdb": _read_rafdb, "fer2013": _read_fer2013, "folder": _read_folder}


# ---------------------------------------------------------------- decoding and caching


def _decode_all(blobs, ids, size: int, skip_corrupt: bool):
    """Decode and resize every image; returns (uint8 [N, C, size, size], kept mask)."""
    mode = None
    out, keep = [], np.ones(len(blobs), dtype=bool)
    for i, blob in enumerate(blobs):
        try:
            if isinstance(blob, np.ndarray):
                img = torch.from_numpy(blob)
            else:
                raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
                if mode is None:  # the first image decides: grayscale sets stay one channel
                    mode = ImageReadMode.GRAY if decode_image(raw).shape[0] == 1 else ImageReadMode.RGB
                img = decode_image(raw, mode=mode)
        except (RuntimeError, ValueError) as e:
            if not skip_corrupt:
                raise DataError(f"image '{ids[i]}' cannot be decoded ({str(e).splitlines()[0][:80]}); "
                                "fix or remove it, or set data.skip_corrupt=true") from None
            keep[i] = False
            continue
        if img.shape[-2:] != (size, size):
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
            img = img.round().clamp(0, 255).to(torch.uint8)
        out.append(img)
    if not out:
        raise DataError("no image could be decoded; check data.path and data.source")
    return torch.stack(out), keep


def dataset_key(cfg: DataConfig) -> str:
    """What the decoded images depend on: the source's files (or the generator's version and size)."""
    key = {"source": cfg.source, "size": cfg.image_size, "skip": cfg.skip_corrupt}
    if cfg.source == "synthetic":
        key |= {"n": cfg.n_images, "seed": cfg.split_seed, "version": synthetic.VERSION}
    else:
        path = Path(cfg.path).resolve()
        files = [path] if path.is_file() else sorted(path.rglob("*"))  # folders too: an emptied class counts
        key |= {"path": str(path), "files": [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]}
    return digest(key)


def load_dataset(cfg: DataConfig, cache_dir: str | Path | None = None) -> Dataset:
    """Load (from the cache when possible) the dataset that `cfg` names, checked and subsampled."""
    if cfg.source != "synthetic" and not Path(cfg.path).exists():
        raise DataError(f"data.path '{cfg.path}' does not exist; point it at the {cfg.source} data "
                        "(e.g. --set data.path=/path/to/data)")
    cache = Path(cfg.cache_dir or cache_dir or Path(tempfile.gettempdir()) / "correctsweep-cache")
    cache_file = cache / f"data-{cfg.source}-{dataset_key(cfg)}.npz"
    ds = _load_cache(cache_file)
    if ds is None:
        ds = _load_uncached(cfg)
        _check_labels(ds, cfg)  # before the cache is written: a rejected dataset leaves nothing behind
        _write_cache(cache_file, ds)
    else:
        _check_labels(ds, cfg)
    if cfg.max_per_class:
        ds = _subsample(ds, cfg.max_per_class, cfg.split_seed)
    return ds


def _load_cache(cache_file: Path) -> Dataset | None:
    """The decoded dataset cached in `cache_file`, or None when there is none or it is unreadable
    (a disk that filled up, a copy cut short): then it is decoded again and the cache rewritten."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            return Dataset(torch.from_numpy(z["images"]), z["labels"], z["ids"], z["split"], int(z["skipped"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        print(f"decoded-data cache {cache_file} is unreadable ({str(e)[:60]}): decoding again", flush=True)
        return None


def _write_cache(cache_file: Path, ds: Dataset) -> None:
    try:
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=ds.images.numpy(), labels=ds.labels, ids=ds.ids, split=ds.split,
                     skipped=np.int64(ds.skipped))
    except OSError as e:  # a read-only or full cache folder costs a decode next time, not the run
        print(f"could not cache the decoded data in {cache_file.parent} ({e.strerror}); "
              "set data.cache_dir to a writable folder to decode once", flush=True)


def _load_uncached(cfg: DataConfig) -> Dataset:
    if cfg.source == "synthetic":
        images, labels = synthetic.generate(cfg.n_images, cfg.image_size, cfg.split_seed)
        ids = np.asarray([f"synthetic-{i:06d}" for i in range(len(labels))])
        return Dataset(torch.from_numpy(images), labels.astype(np.int64), ids, np.full(len(ids), ""))
    blobs, labels, ids, split = READERS[cfg.source](Path(cfg.path))
    images, keep = _decode_all(blobs, ids, cfg.image_size, cfg.skip_corrupt)
    ids, split = np.asarray(ids, dtype=str), np.asarray(split, dtype=str)
    return Dataset(images, labels.astype(np.int64)[keep], ids[keep], split[keep], int((~keep).sum()))


def _check_labels(ds: Dataset, cfg: DataConfig) -> None:
    bad = ~np.isin(ds.labels, list(CLASS_NAMES))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"label {ds.labels[i]} of sample '{ds.ids[i]}' is out of range; labels must be "
                        "1..7 in RAF-DB numbering (1 Surprise ... 7 Neutral)")
    ids, counts_per_id = np.unique(ds.ids, return_counts=True)
    if (counts_per_id > 1).any():
        raise DataError(f"sample id '{ids[np.argmax(counts_per_id > 1)]}' occurs {counts_per_id.max()} times in "
                        f"'{cfg.path or cfg.source}'; every image needs its own id (file name or source_name)")
    counts = pd.Series(ds.labels).value_counts()
    small = counts[counts < MIN_PER_CLASS]
    if len(small):
        c = int(small.index[0])
        raise DataError(f"class {c} ({class_name(c)}) has only {int(small.iloc[0])} images in "
                        f"'{cfg.path or cfg.source}'; "
                        f"each present class needs at least {MIN_PER_CLASS} to be split")
    if len(counts) < 3:
        raise DataError(f"'{cfg.path or cfg.source}' has {len(counts)} classes; correctsweep needs at least 3")


def _subsample(ds: Dataset, per_class: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ds.labels == c))[:per_class] for c in ds.classes]))
    return Dataset(ds.images[torch.from_numpy(keep)], ds.labels[keep], ds.ids[keep], ds.split[keep], ds.skipped)


# ---------------------------------------------------------------- splits


def group_keys(ids: np.ndarray, pattern: str | None) -> np.ndarray:
    """The group of each sample (its id when there is no pattern)."""
    if not pattern:
        return ids
    regex = re.compile(pattern)
    keys = []
    for i in ids:
        m = regex.search(str(i))
        if m is None:
            raise DataError(f"data.group_pattern {pattern!r} does not match sample id '{i}'; fix the pattern")
        keys.append(m.group(1) if m.groups() else m.group(0))
    return np.asarray(keys)


def _split_groups(labels: np.ndarray, groups: np.ndarray, fractions: list[float], rng) -> list[np.ndarray]:
    """Stratified split of whole groups: each group goes where its classes are most missing.

    With one sample per group this reduces to an exact per-class stratified split."""
    classes, y = np.unique(labels, return_inverse=True)
    names, g = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (g, y), 1)
    target = np.outer(fractions, counts.sum(0))  # [splits, classes]
    have = np.zeros_like(target)
    where = np.empty(len(names), dtype=int)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]  # big groups first pack better
    for k in order:
        need = ((target - have) / np.maximum(counts.sum(0), 1)) @ counts[k]
        where[k] = s = int(np.argmax(need))
        have[s] += counts[k]
    return [np.flatnonzero(where[g] == s) for s in range(len(fractions))]


def make_splits(ds: Dataset, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Indices of train, val (carved out of train), correct and test: seeded, stratified, group-aware."""
    rng = np.random.default_rng(cfg.split_seed)
    groups = group_keys(ds.ids, cfg.group_pattern)
    if cfg.use_split_column:
        own = {"train": "train", "valid": "correct", "test": "test"}
        unknown = sorted(set(ds.split) - set(own))
        if unknown:
            raise DataError(f"data.use_split_column: split value(s) {unknown} are not train/valid/test")
        parts = {name: np.flatnonzero(ds.split == src) for src, name in own.items()}
    else:
        test_fraction = 1 - cfg.train_fraction - cfg.correct_fraction
        train, correct, test = _split_groups(ds.labels, groups, [cfg.train_fraction, cfg.correct_fraction,
                                                                 test_fraction], rng)
        parts = {"train": train, "correct": correct, "test": test}
    tr = parts["train"]
    fit, val = _split_groups(ds.labels[tr], groups[tr], [1 - cfg.val_fraction, cfg.val_fraction], rng)
    splits = {"train": np.sort(tr[fit]), "val": np.sort(tr[val]),
              "correct": np.sort(parts["correct"]), "test": np.sort(parts["test"])}
    for name, idx in splits.items():
        missing = sorted(set(ds.classes) - set(ds.labels[idx].tolist()))
        if missing:
            raise DataError(f"split '{name}' has no image of class {missing[0]} ({class_name(missing[0])}); "
                            "the class is too small for this split — add images or change the fractions")
    return splits


def count_table(ds: Dataset, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    table = pd.DataFrame({name: pd.Series(ds.labels[idx]).value_counts() for name, idx in splits.items()})
    table = table.reindex(ds.classes).fillna(0).astype(int)
    table.index = [f"{c} {class_name(c)}" for c in table.index]
    table["all"] = table.sum(axis=1)
    table.loc["total"] = table.sum()
    return table
