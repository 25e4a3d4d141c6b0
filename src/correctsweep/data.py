"""Datasets and the three-way split.

Every source (see `sources`) ends as one in-memory `Dataset`: uint8 images [N, C, S, S] (C = 1 for
grayscale sets, 3 for colour), integer labels, the classes' names and a sample id per image. Labels
are the source's integers (RAF-DB numbering for the emotion sets), or 0..K-1 for string labels in
sorted order; names come from the source (folder names, a meta file, a label_name column) or the spec's
`data.classes`. Decoding happens once per (source, files, image size); the result is cached on disk as
an .npz, so a second run, or another fold of the same sweep, loads it in a second.
"""

from __future__ import annotations

import io
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from correctsweep.atomic import atomic_path
from correctsweep.config import DataConfig, as_dict, settings_of
from correctsweep.errors import DataError, SpecError
from correctsweep.hashing import digest
from correctsweep.plugins import SOURCES
from correctsweep.reach import bounded
from correctsweep.sources import RAFDB_CLASSES, Records, Source, Unreadable

MIN_PER_CLASS = 8  # one image at least in each of train, val, correct and test, with room to stratify
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass
class Dataset:
    images: torch.Tensor
    """uint8 [N, C, S, S]."""
    labels: np.ndarray
    """int64 [N]."""
    ids: np.ndarray
    """str [N], unique sample ids (file names or row numbers)."""
    split: np.ndarray
    """str [N], the dataset's own split column ('' where it has none)."""
    class_names: dict[int, str] = field(default_factory=dict)
    """label -> name, for every class present."""
    skipped: int = 0
    """Images that failed to decode and were skipped (data.skip_corrupt)."""

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    def named(self, label: int) -> str:
        """'3 Disgust', or the label alone where its name is the label itself."""
        return class_title(label, self.class_names)


def class_title(label, names: dict[int, str]) -> str:
    """'3 Disgust' for a label and its name; the label alone where it has no other name."""
    name = names.get(int(label), str(label))
    return str(label) if name == str(label) else f"{label} {name}"


def class_indices(labels: np.ndarray, classes: list[int], where: str) -> np.ndarray:
    """Each label's position in the sorted `classes` (0..K-1), the index the net and the corrector train on; a
    label outside `classes` is an error naming `where` it came from. (metrics maps unlisted labels to
    a bin of their own instead: a prediction may be any label.)"""
    labels = np.asarray(labels)
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} in {where} are not among the classes {list(classes)}")
    return np.searchsorted(np.asarray(classes), labels).astype(np.int64)


def resolve_fold(text, ds: Dataset) -> str:
    """'none', or the label of the class that `text` (a label, or a class name in any case) names, as
    the run directory spells it: '03' and 'disgust' are '3' in RAF-DB numbering."""
    return fold_of(text, ds.class_names)


def fold_of(text, class_names: dict[int, str]) -> str:
    """resolve_fold for classes known by their names alone (a run's result, without its dataset)."""
    text = str(text).strip()
    if text == "none":
        return text
    if text.isascii() and text.isdigit() and int(text) in class_names:
        return str(int(text))
    by_name = {name.casefold(): label for label, name in class_names.items()}
    if text.casefold() in by_name:
        return str(by_name[text.casefold()])
    known = ", ".join(class_title(c, class_names) for c in sorted(class_names))
    raise SpecError(f"fold {text!r} is neither a class label nor a class name of this dataset ({known}), "
                    "nor 'none'")


# ---------------------------------------------------------------- decoding


def _to_uint8(im: Image.Image, gray: bool) -> np.ndarray:
    """A Pillow image as uint8 [C, H, W]: its first frame, bit depth scaled (16-bit to 8-bit by 257, not
    clipped), palettes and alpha resolved, one channel for a grayscale set and three otherwise."""
    im.seek(0)
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        wide = np.asarray(im, dtype=np.float64)
        array = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        im = Image.fromarray(array, mode="L")
    elif im.mode == "F":
        wide = np.asarray(im, dtype=np.float64)
        scale = 255.0 if np.nanmax(wide) <= 1.0 else 1.0  # float images are either 0..1 or 0..255
        im = Image.fromarray(np.clip(np.round(np.nan_to_num(wide) * scale), 0, 255).astype(np.uint8), mode="L")
    array = np.array(im.convert("L" if gray else "RGB"))  # a copy: torch wants writable memory
    return array[None] if gray else array.transpose(2, 0, 1)


def decode(blob, gray: bool | None) -> np.ndarray:
    """One image (encoded bytes, a Pillow image or a uint8 array [C, H, W]) as uint8 [C, H, W]; gray None: as it comes
    (the first image of a set decides whether the set is grayscale). Raises ValueError with the reason."""
    if blob is None:
        raise ValueError("empty image cell")
    if isinstance(blob, Image.Image):
        return _to_uint8(blob, blob.mode in GRAY_MODES if gray is None else gray)
    if isinstance(blob, Unreadable):
        raise ValueError(blob.reason)
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8 or blob.ndim != 3 or blob.shape[0] not in (1, 3):
            raise ValueError(f"an array of shape {blob.shape} and dtype {blob.dtype} is not uint8 [1 or 3, H, W]")
        if gray is None or (blob.shape[0] == 1) == gray:
            return blob
        return blob.repeat(3, 0) if blob.shape[0] == 1 else _to_uint8(Image.fromarray(blob.transpose(1, 2, 0)), True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(blob))) as im:
                return _to_uint8(im, im.mode in GRAY_MODES if gray is None else gray)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise ValueError(str(e).splitlines()[0][:80] if str(e) else type(e).__name__) from None


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] at size x size (antialiased bilinear, as the nets were always fed)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def decode_resized(blob, gray: bool | None, size: int) -> torch.Tensor:
    """One image as the net is fed it: `decode`, then `resize`; uint8 [C, size, size]."""
    return resize(torch.from_numpy(np.ascontiguousarray(decode(blob, gray)))[None], size)[0]


def _one_mode(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Images decoded as they come ([1 or 3, S, S]) in one mode: colour if the first is, or if another shows
    colour (channels that differ); else grayscale, a colour image of greys being its first channel."""
    colour = images[0].shape[0] == 3 or any(
        img.shape[0] == 3 and not (torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])) for img in images)
    if colour:
        return [img.repeat(3, 1, 1) if img.shape[0] == 1 else img for img in images]
    return [img[:1] for img in images]


def decode_batch(images, ids, size: int, skip_corrupt: bool,
                 gray: bool | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Images as the net is fed them (`decode_resized`): uint8 [n, C, size, size] of those that decode, and
    the mask of which did. gray None: grayscale if the first image is and no other has colour (a palette
    image of greys is grey), else colour throughout (see `_one_mode`). An image that
    does not decode is skipped (skip_corrupt) or refused in one line naming its id. A source's own decoded
    batch (a uint8 array [N, C, H, W]: synthetic, CIFAR) is resized as it comes."""
    if isinstance(images, np.ndarray):
        return resize(torch.from_numpy(np.ascontiguousarray(images)), size), np.ones(len(images), dtype=bool)
    out, keep = [], np.ones(len(images), dtype=bool)
    for i, blob in enumerate(images):
        try:
            img = decode_resized(blob, gray, size)
        except ValueError as e:
            if not skip_corrupt:
                raise DataError(f"image '{ids[i]}' cannot be decoded ({e}); fix or remove it, or set "
                                "data.skip_corrupt=true (for predict: in the run's spec.yaml)") from None
            keep[i] = False
            continue
        out.append(img)
    if gray is None and out:
        out = _one_mode(out)
    return (torch.stack(out) if out else torch.empty(0, 1 if gray else 3, size, size, dtype=torch.uint8)), keep


# ---------------------------------------------------------------- loading, naming and caching


def dataset_key(cfg: DataConfig) -> str:
    """What the decoded images depend on: the source's files (or the generator's settings) and size."""
    source = _source(cfg)
    key = {"source": cfg.source, "settings": as_dict(source.settings), "size": cfg.image_size,
           "skip": cfg.skip_corrupt} | source.cache_key(cfg)
    if source.needs_path:
        path = Path(cfg.path).resolve()
        files = [path] if path.is_file() else sorted(path.rglob("*"))  # folders too: an emptied class counts
        key |= {"path": str(path), "files": [(str(f), *_stat(f)) for f in files]}
    return digest(key)


def _source(cfg: DataConfig) -> Source:
    """The reader of data.source, given its settings."""
    return SOURCES.get(cfg.source)(settings_of(cfg, cfg.source))


def _stat(f: Path) -> tuple[int, int]:
    try:
        st = f.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:  # a dangling link: it counts by its name alone, and decodes as Unreadable
        return -1, -1


def load_dataset(cfg: DataConfig, cache_dir: str | Path | None = None) -> Dataset:
    """Load (from the cache when possible) the dataset that `cfg` names, checked, named and subsampled."""
    source = _source(cfg)
    if source.needs_path and not Path(cfg.path).exists():
        raise DataError(f"data.path '{cfg.path}' does not exist; point it at {source.layout} "
                        "(e.g. --set data.path=/path/to/data)")
    cache = Path(cfg.cache_dir or cache_dir or Path(tempfile.gettempdir()) / "correctsweep-cache")
    cache_file = cache / f"data-{cfg.source}-{dataset_key(cfg)}.npz"
    ds = _load_cache(cache_file)
    if ds is None:
        ds = _decoded(source.read(Path(cfg.path) if source.needs_path else None, cfg), cfg)
        _check(ds, cfg)  # before the cache is written: a rejected dataset leaves nothing behind
        _write_cache(cache_file, ds)
    else:
        _check(ds, cfg)
    ds.class_names = class_names(ds, cfg)
    if cfg.max_per_class:
        ds = _subsample(ds, cfg.max_per_class, cfg.split_seed)
    return ds


def numbered(records: Records) -> tuple[np.ndarray, dict]:
    """Integer labels and the source's names keyed by them: string labels become 0..K-1 in sorted order,
    named by themselves (or by the source's names of those strings)."""
    labels = np.asarray(records.labels)
    names = dict(records.names or {})
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64), {int(k): str(v) for k, v in names.items()}
    strings = labels.astype(str)
    distinct, numbered = np.unique(strings, return_inverse=True)
    return numbered.astype(np.int64), {i: str(names.get(s, s)) for i, s in enumerate(distinct)}


def _decoded(records: Records, cfg: DataConfig) -> Dataset:
    labels, names = numbered(records)
    images, keep = decode_batch(records.images, records.ids, cfg.image_size, cfg.skip_corrupt)
    if not keep.any():
        raise DataError("no image could be decoded; check data.path and data.source")
    ids, split = np.asarray(records.ids, dtype=str), np.asarray(records.split, dtype=str)
    present = set(labels[keep].tolist())
    return Dataset(images, labels[keep], ids[keep], split[keep], {k: v for k, v in names.items() if k in present},
                   int((~keep).sum()))


def class_names(ds: Dataset, cfg: DataConfig) -> dict[int, str]:
    """Every present class's name: the spec's data.classes (the preset 'rafdb', a list naming the sorted
    labels in order, or a mapping label -> name) over the source's names, over the label itself."""
    where, classes, given = f"'{cfg.path or cfg.source}'", ds.classes, cfg.classes
    if given is None:
        names = {c: ds.class_names.get(c, str(c)) for c in classes}
    elif given == "rafdb":
        outside = sorted(set(classes) - set(RAFDB_CLASSES))
        if outside:
            raise DataError(f"data.classes is rafdb, but {where} has labels {outside} outside RAF-DB's 1..7; "
                            "drop data.classes or name the classes with a list or mapping")
        names = {c: RAFDB_CLASSES[c] for c in classes}
    elif isinstance(given, list):
        if len(given) != len(classes):
            raise DataError(f"data.classes lists {len(given)} names, but {where} has {len(classes)} classes "
                            f"(labels {classes}); list one name per class, in label order")
        names = dict(zip(classes, map(str, given)))
    else:
        names = _mapped(given, ds, where)
    doubled = pd.Series(names).duplicated(keep=False)
    if doubled.any():
        raise DataError(f"classes {list(doubled[doubled].index)} of {where} share the name "
                        f"{names[doubled[doubled].index[0]]!r}; give every class its own name (data.classes)")
    return names


def _mapped(given: dict, ds: Dataset, where: str) -> dict[int, str]:
    """data.classes as a mapping: keys are labels, or the names the source gave them."""
    by_key = {}
    for c in ds.classes:
        for key in (c, str(c), ds.class_names.get(c)):
            if key in given:
                by_key[c] = str(given[key])
                break
    missing = [c for c in ds.classes if c not in by_key]
    if missing:
        raise DataError(f"data.classes names no class {missing[0]} of {where}; map every label to a name")
    known = {k for c in ds.classes for k in (c, str(c), ds.class_names.get(c))}
    extra = [k for k in given if k not in known]
    if extra:
        raise DataError(f"data.classes names {extra[0]!r}, which is no label of {where} (labels {ds.classes})")
    return by_key


def _load_cache(cache_file: Path) -> Dataset | None:
    """The decoded dataset cached in `cache_file`, or None when there is none or it is unreadable
    (a disk that filled up, a copy cut short): then it is decoded again and the cache rewritten."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            names = dict(zip(z["name_labels"].tolist(), z["name_values"].tolist()))
            return Dataset(torch.from_numpy(z["images"]), z["labels"], z["ids"], z["split"], names,
                           int(z["skipped"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        print(f"decoded-data cache {cache_file} is unreadable ({str(e)[:60]}): decoding again", flush=True)
        return None


def _write_cache(cache_file: Path, ds: Dataset) -> None:
    try:
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=ds.images.numpy(), labels=ds.labels, ids=ds.ids, split=ds.split,
                     name_labels=np.asarray(list(ds.class_names), dtype=np.int64),
                     name_values=np.asarray(list(ds.class_names.values()), dtype=str), skipped=np.int64(ds.skipped))
    except OSError as e:  # a read-only or full cache folder costs a decode next time, not the run
        print(f"could not cache the decoded data in {cache_file.parent} ({e.strerror}); "
              "set data.cache_dir to a writable folder to decode once", flush=True)


def _check(ds: Dataset, cfg: DataConfig) -> None:
    where = f"'{cfg.path or cfg.source}'"
    ids, counts_per_id = np.unique(ds.ids, return_counts=True)
    if (counts_per_id > 1).any():
        raise DataError(f"sample id '{ids[np.argmax(counts_per_id > 1)]}' occurs {counts_per_id.max()} times in "
                        f"{where}; every image needs its own id (file name or source_name)")
    counts = pd.Series(ds.labels).value_counts()
    if len(counts) < 3:
        raise DataError(f"{where} has {len(counts)} class(es); correctsweep needs at least 3 (an excluded class "
                        "and two f is trained on)")
    small = counts[counts < MIN_PER_CLASS]
    if len(small):
        c = int(small.index[0])
        raise DataError(f"class {ds.named(c)} has only {int(small.iloc[0])} images in {where}; each class needs at "
                        f"least {MIN_PER_CLASS} to be split: add images, or remove the class from the data")


def _subsample(ds: Dataset, per_class: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ds.labels == c))[:per_class] for c in ds.classes]))
    return Dataset(ds.images[torch.from_numpy(keep)], ds.labels[keep], ds.ids[keep], ds.split[keep], ds.class_names,
                   ds.skipped)


# ---------------------------------------------------------------- splits


GROUP_PATTERN_SECONDS = 10.0
"""How long data.group_pattern may take over all sample ids: a pattern such as (a+)+ can backtrack for ages."""


def group_keys(ids: np.ndarray, pattern: str | None) -> np.ndarray:
    """The group of each sample (its id when there is no pattern)."""
    if not pattern:
        return ids
    regex = re.compile(pattern)
    keys = []
    slow = DataError(f"data.group_pattern {pattern!r} takes more than {GROUP_PATTERN_SECONDS:g} s over the "
                     f"{len(ids)} sample ids (a repetition inside a repetition, such as (a+)+, backtracks without "
                     "end); write it without one, e.g. ^(S\\d+)_")
    with bounded(GROUP_PATTERN_SECONDS, slow):
        for i in ids:
            m = regex.search(str(i))
            if m is None:
                raise DataError(f"data.group_pattern {pattern!r} does not match sample id '{i}'; fix the pattern")
            keys.append(m.group(1) if m.groups() else m.group(0))
    return np.asarray(keys)


def split_groups(labels: np.ndarray, groups: np.ndarray, fractions: list[float], rng) -> list[np.ndarray]:
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


def _own_split(ds: Dataset, groups: np.ndarray, cfg: DataConfig, rng) -> dict[str, np.ndarray]:
    """The dataset's own split column: train -> train, valid -> correct, test -> test. A set with no valid
    part (CIFAR: train and test only) has `correct` carved out of its train part, stratified, in the
    spec's proportion of train to correct."""
    own = {"train": "train", "valid": "correct", "test": "test"}
    unknown = sorted(set(ds.split) - set(own))
    if unknown:
        raise DataError(f"data.use_split_column: split value(s) {unknown} are not train/valid/test; "
                        "set data.use_split_column=false for a random split")
    parts = {name: np.flatnonzero(ds.split == src) for src, name in own.items()}
    if not len(parts["correct"]):
        tr = parts["train"]
        share = cfg.correct_fraction / (cfg.train_fraction + cfg.correct_fraction)
        train, correct = split_groups(ds.labels[tr], groups[tr], [1 - share, share], rng)
        parts["train"], parts["correct"] = tr[train], tr[correct]
    return parts


def make_splits(ds: Dataset, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Indices of train, val (carved out of train), correct and test: seeded, stratified, group-aware."""
    rng = np.random.default_rng(cfg.split_seed)
    groups = group_keys(ds.ids, cfg.group_pattern)
    if cfg.use_split_column:
        parts = _own_split(ds, groups, cfg, rng)
    else:
        test_fraction = 1 - cfg.train_fraction - cfg.correct_fraction
        train, correct, test = split_groups(ds.labels, groups, [cfg.train_fraction, cfg.correct_fraction,
                                                                 test_fraction], rng)
        parts = {"train": train, "correct": correct, "test": test}
    tr = parts["train"]
    fit, val = split_groups(ds.labels[tr], groups[tr], [1 - cfg.val_fraction, cfg.val_fraction], rng)
    splits = {"train": np.sort(tr[fit]), "val": np.sort(tr[val]),
              "correct": np.sort(parts["correct"]), "test": np.sort(parts["test"])}
    for name, idx in splits.items():
        missing = sorted(set(ds.classes) - set(ds.labels[idx].tolist()))
        if missing:
            raise DataError(f"split '{name}' has no image of class {ds.named(missing[0])}; "
                            "the class is too small for this split — add images or change the fractions")
    return splits


def count_table(ds: Dataset, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    table = pd.DataFrame({name: pd.Series(ds.labels[idx]).value_counts() for name, idx in splits.items()})
    table = table.reindex(ds.classes).fillna(0).astype(int)
    table.index = [ds.named(c) for c in table.index]
    table["all"] = table.sum(axis=1)
    table.loc["total"] = table.sum()
    return table
