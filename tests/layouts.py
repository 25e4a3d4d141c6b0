"""Tiny datasets in the official layouts the sources read, made by the tests (nothing is downloaded)."""
import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng, labels, k, side=32):
    """Class-coloured noise: each class has its own mean colour, so a small net can learn it."""
    colours = np.linspace(20, 235, k)[:, None] * np.array([1.0, 0.5, 0.25])[None] + rng.integers(0, 20, (k, 3))
    noise = rng.normal(0, 25, (len(labels), 3, side, side))
    return np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8).reshape(len(labels), -1)


def _dump(path: Path, obj) -> None:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the official files are Python 2 pickles


def write_cifar10(root: Path, train_per_class=12, test_per_class=6, names=CIFAR10_NAMES, seed=0) -> Path:
    """cifar-10-batches-py/ under `root`: data_batch_1..5 (the train images spread over them), test_batch,
    batches.meta. Returns `root`."""
    rng, k = np.random.default_rng(seed), len(names)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = rng.permutation(np.repeat(np.arange(k), train_per_class))
    for i, part in enumerate(np.array_split(train, 5), 1):
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": part.tolist(),
                                           "data": _images(rng, part, k),
                                           "filenames": [f"train_{i}_{j:05d}.png" for j in range(len(part))]})
    test = np.repeat(np.arange(k), test_per_class)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test.tolist(),
                                  "data": _images(rng, test, k), "filenames": [f"test_{j:05d}.png" for j in
                                                                                range(len(test))]})
    _dump(folder / "batches.meta", {"label_names": list(names), "num_cases_per_batch": len(train) // 5,
                                    "num_vis": 3072})
    return Path(root)


def write_cifar100(root: Path, classes=5, train_per_class=12, test_per_class=6, seed=0) -> Path:
    """cifar-100-python/ under `root` with `classes` fine labels (named fine_0, ...): train, test, meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(classes), n)
        _dump(folder / part, {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                              "data": _images(rng, labels, classes), "batch_label": part,
                              "filenames": [f"{part}_{j:05d}.png" for j in range(len(labels))]})
    _dump(folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(classes)],
                            "coarse_label_names": ["coarse_0"]})
    return Path(root)
