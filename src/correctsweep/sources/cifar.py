"""cifar10 and cifar100: the official "python version" layouts, read without torchvision's checksum
check (so a user's own data in the layout, or a test's tiny set, loads too).

  cifar-10-batches-py/   data_batch_1..5, test_batch, batches.meta (label_names)
  cifar-100-python/      train, test, meta (fine_label_names); the 100 fine labels are the classes

data.path may be that folder or the folder holding it. Each batch is a pickle of a dict; it is read
with an unpickler that admits numpy arrays and nothing else, since a pickle can run any code.
The files' own train/test is the split column (data.use_split_column).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from correctsweep.errors import DataError
from correctsweep.sources.base import Records, Source

# What a CIFAR pickle may name: numpy's array reconstruction, under numpy 1's and numpy 2's module names.
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def load_batch(path: Path) -> dict:
    """One batch file as a dict with str keys (Python 2 pickles, hence latin1, as the official readers do)."""
    if not path.is_file():
        raise DataError(f"CIFAR file '{path}' not found; data.path must hold the official python layout")
    try:
        with path.open("rb") as fh:
            batch = _ArraysOnly(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"CIFAR file '{path}' is not a readable batch ({str(e)[:100]}); refusing to load it") from None
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR file '{path}' holds a {type(batch).__name__}, not a batch dict")
    return batch


class Cifar(Source):
    name = "cifar10"
    folder = "cifar-10-batches-py"
    parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    meta_file, names_key, labels_key = "batches.meta", "label_names", "labels"

    @property
    def layout(self) -> str:
        return f"the official {self.folder}/ folder ({', '.join(self.parts['train'] + self.parts['test'])}, " \
               f"{self.meta_file})"

    def read(self, path: Path, cfg) -> Records:
        root = path / self.folder if (path / self.folder).is_dir() else path
        names = load_batch(root / self.meta_file).get(self.names_key)
        if not isinstance(names, list) or not names:
            raise DataError(f"CIFAR meta file '{root / self.meta_file}' lacks its {self.names_key} list")
        images, labels, ids, split = [], [], [], []
        for part, files in self.parts.items():
            for file in files:
                data, y, filenames = self._batch(root / file)
                images.append(data)
                labels.append(y)
                ids += [f"{file}/{name}" for name in filenames]
                split += [part] * len(y)
        labels = np.concatenate(labels)
        if labels.min() < 0 or labels.max() >= len(names):
            raise DataError(f"CIFAR labels in '{root}' run from {labels.min()} to {labels.max()}, but "
                            f"{self.meta_file} names {len(names)} classes")
        return Records(np.concatenate(images), labels, ids, split, dict(enumerate(map(str, names))))

    def _batch(self, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        batch = load_batch(path)
        data, labels = batch.get("data"), batch.get(self.labels_key)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] % 3 or labels is None:
            raise DataError(f"CIFAR file '{path}' lacks data [N, 3*H*W] or {self.labels_key}")
        side = int(round((data.shape[1] // 3) ** 0.5))
        labels = np.asarray(labels, dtype=np.int64)
        if side * side * 3 != data.shape[1] or len(labels) != len(data):
            raise DataError(f"CIFAR file '{path}': {len(data)} rows of {data.shape[1]} values and {len(labels)} labels "
                            "are not square RGB images with one label each")
        filenames = batch.get("filenames") or [f"{i:05d}" for i in range(len(data))]
        return data.astype(np.uint8, copy=False).reshape(-1, 3, side, side), labels, [str(f) for f in filenames]


class Cifar100(Cifar):
    name = "cifar100"
    folder = "cifar-100-python"
    parts = {"train": ["train"], "test": ["test"]}
    meta_file, names_key, labels_key = "meta", "fine_label_names", "fine_labels"
