"""predict, load_corrected and export on the tiny run (conftest: every corrector kind on compact embeddings):
h on the run's own test split reproduces the recorded h exactly, PNGs of those images give the same
labels, the ONNX pair agrees, and bad input is one line, exit code 2 and no output file."""
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import KINDS, TINY
from PIL import Image

from correctsweep import cli, load_corrected
from correctsweep.data import make_splits
from correctsweep.errors import CorrectsweepError
from correctsweep.predict import predict_file, run_dataset

SIZE = TINY["data"]["image_size"]


@pytest.fixture
def run(tiny_run):
    return tiny_run


def recorded(run, kind):
    result = json.loads((run / "results" / "fold=3" / "seed=0.json").read_text())
    return pd.read_parquet(run / result["paths"]["correctors"][kind] / "predictions.parquet")


def test_split_test_reproduces_the_recorded_h_for_every_kind(run, tmp_path):
    for kind in KINDS:
        out = tmp_path / f"{kind}.parquet"
        assert cli.main(["predict", str(run), "--fold", "3", "--kind", kind, "split:test", "--out", str(out)]) == 0
        got, want = pd.read_parquet(out), recorded(run, kind)
        assert got.id.tolist() == want.sample_id.tolist() and (got.label == want.label).all()
        assert (got.pred_f == want.pred_f).all() and (got.pred_h == want.pred_h).all(), kind
        assert (got.changed == (got.pred_h != got.pred_f)).all() and (got.unseen == (got.pred_h == 3)).all()
        p_excluded = want[f"p_{3}"].to_numpy()
        assert np.allclose(got.p_excluded, p_excluded, atol=1e-6)


def test_default_is_best_choice_by_class_name_and_from_best_folder_as_csv(run, tmp_path):
    out = tmp_path / "h.csv"
    assert cli.main(["predict", str(run / "best"), "--fold", "disgust", "split:test", "--out", str(out)]) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["id", "label", "pred_f", "name_f", "pred_h", "name_h", "changed", "p_h",
                                 "p_excluded", "unseen"]
    assert (got.pred_h == recorded(run, "xgboost").pred_h).all()  # best's choice: the published kind
    assert set(got.name_f) <= {"Surprise", "Fear", "Happiness", "Sadness", "Anger", "Neutral"}


def test_pngs_of_test_images_give_the_split_labels(run, tmp_path):
    clf = load_corrected(run, fold=3, device="cpu")
    ds = run_dataset(clf.spec)
    idx = make_splits(ds, clf.spec.data)["test"]
    folder = tmp_path / "pngs"
    for n, i in enumerate(idx):  # lossless, in the split's order (nested folders: found recursively)
        path = folder / f"part{n // 50}" / f"{n:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(path)
    out = tmp_path / "folder.parquet"
    assert cli.main(["predict", str(run), "--fold", "3", str(folder), "--out", str(out)]) == 0
    got = pd.read_parquet(out)
    assert got.id.iloc[0] == "part0/0000.png"
    assert (got.pred_h.to_numpy() == recorded(run, "xgboost").pred_h.to_numpy()).all()


def test_python_api(run, tmp_path):
    clf = load_corrected(run / "best", fold="Disgust")
    assert clf.classes == [1, 2, 3, 4, 5, 6, 7] and clf.class_names[2] == "Disgust"
    ds = run_dataset(clf.spec)
    idx = make_splits(ds, clf.spec.data)["test"]
    images = ds.images[idx]
    want = recorded(run, "xgboost")
    assert (clf.predict(images.numpy()) == want.pred_h.to_numpy()).all()  # the whole split: one batch
    proba = clf.predict_proba(images)
    assert proba.shape == (len(idx), 7) and np.allclose(proba, want.filter(like="p_").to_numpy(), atol=1e-6)
    # a few images: other batches than extraction's, so a probability within float noise of tau may flip
    few = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images[:10]]
    table = clf.explain(few)
    sel = clf.selection.record
    conf = proba[:10].max(1) if sel.policy == "override" else proba[:10, 2]
    assert ((table.pred_h.to_numpy() == want.pred_h[:10].to_numpy()) | (np.abs(conf - sel.tau) < 1e-4)).all()
    paths = []
    for n, im in enumerate(few[:3]):
        paths.append(tmp_path / f"{n}.png")
        im.save(paths[-1])
    assert (clf.predict(paths) == table.pred_h[:3].to_numpy()).all()
    assert len(clf.predict(images[:2, 0].numpy())) == 2  # grayscale [N, H, W]: replicated as training would
    assert len(clf.predict(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))) == 2  # resized to the run's SIZE
    with pytest.raises(CorrectsweepError, match="cannot be mapped"):
        clf.predict(np.zeros((2, 4, SIZE, SIZE), dtype=np.uint8))
    with pytest.raises(CorrectsweepError, match="uint8"):
        clf.predict(np.zeros((2, 3, SIZE, SIZE), dtype=np.float32))


def test_corrupt_images_are_skipped_and_counted_when_the_run_skips_them(run, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (SIZE, SIZE), (90, 60, 30)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    clf = load_corrected(run, fold=3)
    clf.spec.data.skip_corrupt = True
    summary = predict_file(clf, str(folder), tmp_path / "out.parquet")
    assert (summary.images, summary.skipped) == (1, 1)
    assert pd.read_parquet(tmp_path / "out.parquet").id.tolist() == ["a.png"]


@pytest.mark.slow  # the ONNX export of three kinds: 15 s
def test_onnx_pair_agrees_with_predict(run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxmltools")
    pytest.importorskip("onnxscript")
    from correctsweep.export import OnnxPair

    for kind in KINDS:
        folder = tmp_path / f"onnx-{kind}"
        assert cli.main(["export", str(run), "--fold", "3", "--kind", kind, "--onnx", str(folder)]) == 0
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["kind"] == kind
        assert manifest["input"] == {**manifest["input"], "channels": 3, "image_size": SIZE}
        assert [t["name"] for t in manifest["taps"]] == load_corrected(run, 3, kind=kind).selection.record.taps
        clf = load_corrected(run, fold=3, kind=kind)
        ds = run_dataset(clf.spec)
        images = ds.images[make_splits(ds, clf.spec.data)["test"]]
        ref, got = clf.run(images), OnnxPair(folder).run(images.numpy())
        diff = np.abs(got.proba - ref.proba).max(1)
        # ORT's float32 kernels against torch's, amplified by whitening; and a tap within that noise of one
        # of XGBoost's split thresholds takes the other branch, moving its image by a leaf's value
        assert (diff > 1e-3).mean() <= 0.02 and diff.max() < 0.1, (kind, np.sort(diff)[-3:])
        sel = clf.selection.record
        conf = ref.proba.max(1) if sel.policy == "override" else ref.proba[:, clf.classes.index(3)]
        near = np.abs(conf - sel.tau) <= diff
        assert (got.pred_f == ref.pred_f).all()
        assert ((got.pred_h == ref.pred_h) | near).all(), kind


def test_export_names_the_extra_when_onnx_is_missing(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # an import of it raises ImportError
    assert cli.main(["export", str(tmp_path), "--fold", "3", "--onnx", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'correctsweep[export]'" in err


def broken(run, tmp, what):
    """A copy of the run with one of best's artifacts damaged."""
    copy = tmp / "copy"
    shutil.copytree(run, copy)
    shutil.copytree(run.parent / ".cache", tmp / ".cache")  # the decoded dataset, found beside the run
    folder = copy / "best" / "fold=3" / "seed=0"
    if what == "weights":
        (folder / "net" / "weights.pt").write_bytes(b"\0" * 64)
    else:
        (folder / "corrector" / "model.ubj").write_bytes(b"{ truncated")
    return copy


def image_folder(tmp, *blobs):
    folder = tmp / "in"
    folder.mkdir(exist_ok=True)
    for n, blob in enumerate(blobs):
        (folder / f"{n}.png").write_bytes(blob)
    return folder


def good_png():
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (SIZE, SIZE)).save(buffer, format="PNG")
    return buffer.getvalue()


def predict(run_dir, *extra, fold="3", input_="split:test"):
    return lambda r, t: ["predict", str(run_dir(r, t)), "--fold", fold, input_(r, t) if callable(input_) else input_,
                         "--out", str(t / "out" / "h.parquet"), *extra]


RUN = lambda r, t: r
CASES = [
    ("run without results or best", predict(lambda r, t: (t / "empty").mkdir() or t / "empty"), "no results/"),
    ("fold with no result", predict(RUN, fold="5"), "fold 5 has no result"),
    ("fold not a class", predict(RUN, fold="99"), "fold '99'"),
    ("seed that does not exist", predict(RUN, "--seed", "7"), "no result for seed 7; seeds with results: [0]"),
    ("kind not searched", predict(RUN, "--kind", "centroid"), "searched no centroid corrector"),
    ("input missing", predict(RUN, input_=lambda r, t: str(t / "nope")), "does not exist"),
    ("input an empty folder", predict(RUN, input_=lambda r, t: str((t / "e").mkdir() or t / "e")),
     "holds no image"),
    ("unknown split", predict(RUN, input_="split:holdout"), "the run's splits are"),
    ("corrupt image refused", predict(RUN, input_=lambda r, t: str(image_folder(t, good_png(), b"junk"))),
     "image '1.png' cannot be decoded"),
    ("parquet without images", predict(RUN, input_=lambda r, t: pd.DataFrame({"x": [1]}).to_parquet(
        t / "t.parquet") or str(t / "t.parquet")), "needs a column `image`"),
    ("out in a missing folder", lambda r, t: ["predict", str(r), "--fold", "3", "split:test", "--out",
                                              str(t / "no" / "such" / "h.parquet")], "does not exist"),
    ("cuda without a GPU", predict(RUN, "--device", "cuda"), "no GPU is visible"),
    ("net weights damaged", predict(lambda r, t: broken(r, t, "weights")), "checksum"),
    ("corrector file damaged", predict(lambda r, t: broken(r, t, "corrector")), "does not load"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="one case needs a machine without a GPU")
@pytest.mark.parametrize("name, argv, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, name, argv, expect):
    (tmp_path / "out").mkdir()
    args = argv(run, tmp_path)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("correctsweep: error:"), err
    assert expect in err, err
    assert not list((tmp_path / "out").iterdir())  # neither the output nor a temporary file


def test_a_shipped_run_predicts_without_its_data_or_cache(run, tmp_path):
    """What ships is the run's spec.yaml and best/ (the net, the corrector): nothing of the data it was
    trained on, whose decoded cache would otherwise be read for the channel count."""
    shipped = tmp_path / "shipped" / TINY["name"]
    shipped.mkdir(parents=True)
    shutil.copy(run / "spec.yaml", shipped / "spec.yaml")
    shutil.copytree(run / "best", shipped / "best")
    assert not (shipped.parent / ".cache").exists()
    images = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clf, ours = load_corrected(shipped / "best", fold=3, device="cpu"), load_corrected(run, fold=3, device="cpu")
    assert clf.channels == ours.channels and (clf.predict(images) == ours.predict(images)).all()
    assert not (shipped.parent / ".cache").exists()
