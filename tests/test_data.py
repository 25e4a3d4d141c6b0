import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from correctsweep.config import DataConfig
from correctsweep.data import load_dataset, make_splits
from correctsweep.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def png(value: int, size=(20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def labels_list(per_class=10, classes=(1, 2, 3)):
    return [c for c in classes for _ in range(per_class)]


def write_parquet(path, labels, corrupt=()):
    images = [b"garbage" if i in corrupt else png(i % 255) for i in range(len(labels))]
    pq.write_table(pa.table({"image": images, "label": labels, "split": [""] * len(labels),
                             "source_name": [f"S{i // 3:03d}_{i}.png" for i in range(len(labels))]}), path)


def cfg(tmp_path, **kw):
    return DataConfig(image_size=16, cache_dir=str(tmp_path / "cache"), **kw)


def test_parquet_source_and_cache(tmp_path):
    write_parquet(tmp_path / "d.parquet", labels_list())
    c = cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"))
    ds = load_dataset(c)
    assert ds.images.shape == (30, 1, 16, 16) and ds.classes == [1, 2, 3]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = load_dataset(c)
    assert (again.images == ds.images).all()


def test_corrupt_image_is_an_error_or_a_counted_skip(tmp_path):
    write_parquet(tmp_path / "d.parquet", labels_list(), corrupt={4})
    with pytest.raises(DataError, match="cannot be decoded"):
        load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet")))
    ds = load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"), skip_corrupt=True))
    assert ds.skipped == 1 and len(ds.labels) == 29


def test_label_out_of_range_and_small_class(tmp_path):
    write_parquet(tmp_path / "d.parquet", labels_list() + [9] * 10)
    with pytest.raises(DataError, match=r"labels \[9\] outside RAF-DB"):
        load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"), classes="rafdb"))
    assert load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"))).classes == [1, 2, 3, 9]
    write_parquet(tmp_path / "e.parquet", labels_list() + [4] * 3)
    with pytest.raises(DataError, match="class 4"):
        load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "e.parquet")))


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(cfg(tmp_path, source="parquet", path=str(tmp_path / "nope")))


def test_fer2013_csv_maps_labels(tmp_path):
    path = tmp_path / "fer2013.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for code in (0, 3, 5):  # Angry, Happy, Surprise -> 6, 4, 1
            for _ in range(8):
                w.writerow([code, " ".join(["7"] * 48 * 48), "Training"])
    ds = load_dataset(cfg(tmp_path, source="fer2013", path=str(path)))
    assert ds.classes == [1, 4, 6] and set(ds.split) == {"train"}


def test_rafdb_layout(tmp_path):
    base = tmp_path / "basic"
    (base / "EmoLabel").mkdir(parents=True)
    (base / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for i, label in enumerate(labels_list(8)):
        name = f"{'train' if i % 2 else 'test'}_{i:05d}.jpg"
        aligned = base / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")
        Image.fromarray(np.full((20, 20, 3), i, np.uint8)).save(aligned)
        lines.append(f"{name} {label}")
    (base / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines))
    ds = load_dataset(cfg(tmp_path, source="rafdb", path=str(base)))
    assert ds.images.shape[1] == 3 and len(ds.labels) == 24 and set(ds.split) == {"train", "test"}
    (base / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines + ["train_99999.jpg 1"]))
    with pytest.raises(DataError, match="train_99999_aligned.jpg"):
        load_dataset(cfg(tmp_path, source="rafdb", path=str(base)))


def test_folder_source_and_empty_class(tmp_path):
    for name in ("happy", "sad", "surprise"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((20, 20), i, np.uint8)).save(tmp_path / "f" / name / f"{i}.png")
    ds = load_dataset(cfg(tmp_path, source="folder", path=str(tmp_path / "f")))
    assert ds.classes == [1, 4, 5] and ds.class_names == {1: "Surprise", 4: "Happiness", 5: "Sadness"}
    (tmp_path / "f" / "anger").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(cfg(tmp_path, source="folder", path=str(tmp_path / "f")))


def test_split_is_stratified_seeded_and_respects_groups(tmp_path):
    labels = labels_list(60)
    write_parquet(tmp_path / "d.parquet", labels)
    c = cfg(tmp_path, source="parquet", path=str(tmp_path / "d.parquet"), group_pattern=r"(S\d+)_")
    ds = load_dataset(c)
    a, b = make_splits(ds, c), make_splits(ds, c)
    assert all((a[k] == b[k]).all() for k in a)
    groups = {k: {i.split("_")[0] for i in ds.ids[v]} for k, v in a.items()}
    for x in a:
        for y in a:
            if x < y:
                assert not groups[x] & groups[y]
    n_test = np.bincount(ds.labels[a["test"]], minlength=4)[1:]
    assert np.all(np.abs(n_test - 15) <= 3)
    assert sum(len(v) for v in a.values()) == len(labels)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "ferplus").is_dir(), reason="../shared/data/ferplus not present")
def test_ferplus_counts_match_readme(tmp_path):
    ds = load_dataset(cfg(tmp_path, source="parquet", path=str(SHARED / "ferplus")))
    assert np.bincount(ds.labels)[1:].tolist() == [3960, 677, 161, 9045, 3748, 2659, 11010]


@pytest.mark.skipif(not (SHARED / "ckplus48").is_dir(), reason="../shared/data/ckplus48 not present")
def test_ckplus48_spec_splits_by_subject(tmp_path):
    from correctsweep.config import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "ckplus48.yaml",
                     [f"data.path={SHARED / 'ckplus48'}", f"data.cache_dir={tmp_path}", "data.image_size=48"])
    ds = load_dataset(spec.data)
    assert ds.classes == [1, 2, 3, 4, 5, 6]
    subjects = {k: {i.split("/")[-1].split("_")[0] for i in ds.ids[v]} for k, v in make_splits(ds, spec.data).items()}
    assert len(set().union(*subjects.values())) == 106
    assert all(not subjects[a] & subjects[b] for a in subjects for b in subjects if a < b)
