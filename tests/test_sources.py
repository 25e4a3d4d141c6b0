"""Classes come from the data: any labels and names, the CIFAR layouts, and images of any format."""
import io
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from layouts import CIFAR10_NAMES, write_cifar10, write_cifar100
from PIL import Image

from correctsweep.config import DataConfig
from correctsweep.data import load_dataset, make_splits, resolve_fold
from correctsweep.errors import DataError, SpecError


def cfg(tmp_path, **kw):
    return DataConfig(image_size=16, cache_dir=str(tmp_path / "cache"), **kw)


def png(value, mode="L", size=(12, 12), **save):
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def parquet(tmp_path, labels, images=None, **columns):
    path = tmp_path / "d.parquet"
    images = images if images is not None else [png(i % 250) for i in range(len(labels))]
    pd.DataFrame({"image": images, "label": labels, "source_name": [f"img-{i}" for i in range(len(labels))],
                  **columns}).to_parquet(path)
    return cfg(tmp_path, source="parquet", path=str(path))


def test_string_labels_are_numbered_in_sorted_order_and_named_by_themselves(tmp_path):
    ds = load_dataset(parquet(tmp_path, ["scratch"] * 8 + ["dent"] * 8 + ["ok"] * 8 + ["crack"] * 8))
    assert ds.classes == [0, 1, 2, 3]
    assert ds.class_names == {0: "crack", 1: "dent", 2: "ok", 3: "scratch"}
    assert ds.labels[:8].tolist() == [3] * 8


def test_label_name_column_and_data_classes_name_the_classes(tmp_path):
    labels = [0] * 8 + [1] * 8 + [2] * 8
    names = ["cat"] * 8 + ["dog"] * 8 + ["bird"] * 8
    assert load_dataset(parquet(tmp_path, labels, label_name=names)).class_names == {0: "cat", 1: "dog", 2: "bird"}
    c = parquet(tmp_path, labels)
    c.classes = ["a", "b", "c"]
    assert load_dataset(c).class_names == {0: "a", 1: "b", 2: "c"}
    c.classes = {0: "zero", "1": "one", 2: "two"}  # keys as YAML gives them: ints or strings
    assert load_dataset(c).class_names == {0: "zero", 1: "one", 2: "two"}
    c.classes = ["a", "b"]
    with pytest.raises(DataError, match="lists 2 names, but .* has 3 classes"):
        load_dataset(c)
    c.classes = {0: "x", 1: "y", 2: "x"}
    with pytest.raises(DataError, match="share the name 'x'"):
        load_dataset(c)
    c.classes = {0: "x", 1: "y", 2: "z", 5: "w"}
    with pytest.raises(DataError, match="names 5, which is no label"):
        load_dataset(c)


def test_a_label_with_two_names_is_refused(tmp_path):
    with pytest.raises(DataError, match="label 0 has label_name"):
        load_dataset(parquet(tmp_path, [0] * 8 + [1] * 8 + [2] * 8, label_name=["a"] * 7 + ["b"] + ["c"] * 16))


def test_rafdb_preset_names_emotions_and_refuses_other_labels(tmp_path):
    c = parquet(tmp_path, [1] * 8 + [3] * 8 + [7] * 8)
    c.classes = "rafdb"
    assert load_dataset(c).class_names == {1: "Surprise", 3: "Disgust", 7: "Neutral"}
    c = parquet(tmp_path, [0] * 8 + [3] * 8 + [7] * 8)
    c.classes = "rafdb"
    with pytest.raises(DataError, match=r"labels \[0\] outside RAF-DB's 1..7"):
        load_dataset(c)


@pytest.mark.parametrize("labels, match", [
    ([0] * 8 + [1] * 8, "has 2 class"),
    ([0] * 8 + [1] * 8 + [2] * 3, "class 2 has only 3 images"),
])
def test_too_few_classes_or_images(tmp_path, labels, match):
    with pytest.raises(DataError, match=match):
        load_dataset(parquet(tmp_path, labels))


def test_folder_of_any_names_unicode_included_and_gif_files(tmp_path):
    root = tmp_path / "f"
    for name in ("défaut", "éraflure", "ok", "裂纹"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            ext = "gif" if i % 2 else "png"
            Image.new("L", (10, 10), i * 20).save(root / name / f"{i}.{ext}")
    ds = load_dataset(cfg(tmp_path, source="folder", path=str(root)))
    assert ds.class_names == {0: "défaut", 1: "ok", 2: "éraflure", 3: "裂纹"}  # sorted by name
    assert len(ds.labels) == 32 and sum(i.endswith(".gif") for i in ds.ids) == 16
    assert resolve_fold("裂纹", ds) == "3" and resolve_fold("OK", ds) == "1" and resolve_fold("02", ds) == "2"
    with pytest.raises(SpecError, match="neither a class label nor a class name .*0 défaut"):
        resolve_fold("rust", ds)
    with pytest.raises(SpecError):
        resolve_fold("٣", ds)  # an Arabic-Indic digit is no label


def test_folder_named_by_numbers_keeps_the_numbers(tmp_path):
    for name in ("10", "20", "30"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(8):
            Image.new("L", (10, 10), i).save(tmp_path / "f" / name / f"{i}.png")
    ds = load_dataset(cfg(tmp_path, source="folder", path=str(tmp_path / "f")))
    assert ds.classes == [10, 20, 30] and ds.class_names == {10: "10", 20: "20", 30: "30"}


def test_dangling_links_and_fifos_are_counted_skips_or_named_never_a_hang(tmp_path):
    root = tmp_path / "f"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("L", (10, 10), i).save(root / name / f"{i}.png")
    os.symlink(tmp_path / "gone.png", root / "a" / "dangling.png")
    os.mkfifo(root / "b" / "pipe.png")
    with pytest.raises(DataError, match="image 'a/dangling.png' cannot be decoded"):
        load_dataset(cfg(tmp_path, source="folder", path=str(root)))
    ds = load_dataset(cfg(tmp_path, source="folder", path=str(root), skip_corrupt=True))
    assert ds.skipped == 2 and len(ds.labels) == 24


def test_bit_depths_palettes_and_animations_decode_to_uint8(tmp_path):
    wide = io.BytesIO()
    Image.fromarray(np.full((12, 12), 65535, np.uint16)).save(wide, format="PNG")  # 16-bit white
    mid = io.BytesIO()
    Image.fromarray(np.full((12, 12), 32896, np.uint16)).save(mid, format="PNG")  # 128 * 257
    palette = png(3, mode="P")
    frames = [Image.new("L", (12, 12), v) for v in (40, 200)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:])
    images = [wide.getvalue(), mid.getvalue(), palette, animated.getvalue()] + [png(i) for i in range(20)]
    ds = load_dataset(parquet(tmp_path, [0] * 8 + [1] * 8 + [2] * 8, images=images))
    assert ds.images.dtype.is_floating_point is False and ds.images.shape[1:] == (1, 16, 16)
    assert int(ds.images[0].min()) == 255 and int(ds.images[1].float().mean().round()) == 128
    assert int(ds.images[3].float().mean().round()) == 40  # the first frame


def test_null_cells_and_text_image_columns(tmp_path):
    images = [None] + [png(i) for i in range(23)]
    with pytest.raises(DataError, match="image 'img-0' cannot be decoded \\(empty image cell\\)"):
        load_dataset(parquet(tmp_path, [0] * 8 + [1] * 8 + [2] * 8, images=images))
    with pytest.raises(DataError, match="column image must hold encoded image bytes"):
        load_dataset(parquet(tmp_path, [0] * 8 + [1] * 8 + [2] * 8, images=[f"/x/{i}.png" for i in range(24)]))


def test_cifar10_layout_names_classes_from_its_meta_and_splits_by_its_files(tmp_path):
    write_cifar10(tmp_path / "data")
    for path in (tmp_path / "data", tmp_path / "data" / "cifar-10-batches-py"):  # the folder or its parent
        c = DataConfig(source="cifar10", path=str(path), image_size=32, cache_dir=str(tmp_path / "cache"),
                       use_split_column=True)
        ds = load_dataset(c)
        assert ds.class_names == dict(enumerate(CIFAR10_NAMES)) and ds.images.shape == (180, 3, 32, 32)
    assert set(ds.split) == {"train", "test"}
    splits = make_splits(ds, c)
    assert set(splits["test"]) == set(np.flatnonzero(ds.split == "test"))  # the set's own test part
    carved = np.concatenate([splits["train"], splits["val"], splits["correct"]])
    assert sorted(carved) == sorted(np.flatnonzero(ds.split == "train")) and len(splits["correct"]) >= 10


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path, classes=5)
    ds = load_dataset(DataConfig(source="cifar100", path=str(tmp_path), image_size=32,
                                 cache_dir=str(tmp_path / "cache")))
    assert ds.class_names == {i: f"fine_{i}" for i in range(5)} and len(ds.labels) == 90


class Planted:
    def __reduce__(self):
        return (os.system, ("touch planted",))


def test_a_cifar_pickle_that_names_anything_but_arrays_is_refused(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.chdir(tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": CIFAR10_NAMES, "x": Planted()}, fh)
    with pytest.raises(DataError, match="names posix.system, which a CIFAR batch never holds"):
        load_dataset(DataConfig(source="cifar10", path=str(tmp_path), image_size=32, cache_dir=str(tmp_path / "c")))
    assert not (tmp_path / "planted").exists()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02truncated")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta' not found"):
        load_dataset(DataConfig(source="cifar10", path=str(tmp_path), image_size=32, cache_dir=str(tmp_path / "c")))
