"""The reliability drill: bad input of every kind gets one line naming the thing, exit code 2, no
traceback, and leaves the run directory as it was."""
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.io import encode_png

from correctsweep import cli
from correctsweep.config import load_spec

SMOKE = "sweeps/smoke.yaml"


def png(value: int) -> bytes:
    return encode_png(torch.full((1, 12, 12), value, dtype=torch.uint8)).numpy().tobytes()


def colour_png(value: int) -> bytes:
    return encode_png(torch.tensor([value, 255 - value, 0], dtype=torch.uint8)[:, None, None].expand(3, 12, 12)
                      .contiguous()).numpy().tobytes()


def class_folders(tmp, classes=("a", "b", "c"), first=png, rest=colour_png):
    """A folder of class folders, 20 images each: `first` makes each class's first image, `rest` the others."""
    for name in classes:
        (tmp / "imgs" / name).mkdir(parents=True)
        for i in range(20):
            (tmp / "imgs" / name / f"{i:02d}.png").write_bytes((first if i == 0 else rest)(i * 10))
    return tmp / "imgs"


def table(n_per_class=10, classes=(1, 2, 3), **columns) -> pd.DataFrame:
    labels = [c for c in classes for _ in range(n_per_class)]
    frame = {"image": [png(i % 250) for i in range(len(labels))], "label": labels,
             "split": [""] * len(labels), "source_name": [f"img-{i}.png" for i in range(len(labels))]}
    return pd.DataFrame(frame | columns)


def hf_images(frame: pd.DataFrame) -> pd.DataFrame:
    """The image column as HuggingFace datasets write its Image feature: struct<bytes, path>."""
    return frame.assign(image=[{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(frame.image)])


def parquet(tmp, frame, name="part-000.parquet", folder="data"):
    path = tmp / folder
    path.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path / name)
    return tmp / folder


def data_cmd(tmp, path, source="parquet", *extra):
    return ["data", SMOKE, "--set", f"storage={tmp}/out", "--set", f"data.source={source}",
            "--set", f"data.path={path}", *extra]


def fer_csv(tmp, text, name="fer2013.csv"):
    (tmp / name).write_text(text)
    return data_cmd(tmp, tmp / name, "fer2013")


def spec_file(tmp, text=None, data=None):
    path = tmp / "spec.yaml"
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text)
    return ["data", str(path)]


def setting(*pairs):
    return lambda tmp: ["trial", SMOKE, "--fold", "3", "--set", f"storage={tmp}/out", *[
        a for p in pairs for a in ("--set", p)]]


def bad_result(tmp):
    run = tmp / "out" / "smoke"
    (run / "results" / "fold=3").mkdir(parents=True)
    (run / "spec.yaml").write_text(load_spec(SMOKE).to_yaml())
    (run / "results" / "fold=3" / "seed=0.json").write_text('{"fold": "3", "se')  # cut by a kill
    return ["collect", str(run)]


CASES = [
    # the spec file
    ("spec missing", lambda t: ["data", str(t / "nope.yaml")], "not found"),
    ("spec not YAML", lambda t: spec_file(t, "name: [unclosed"), "not valid YAML"),
    ("spec is a list", lambda t: spec_file(t, "- name: x\n"), "must be a mapping"),
    ("spec is binary", lambda t: spec_file(t, data=b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "not text"),
    ("spec scalar", lambda t: spec_file(t, "just words"), "must be a mapping"),
    ("folds a YAML set", lambda t: spec_file(t, "folds: !!set {3, none}\n"), "'folds' must be a list"),
    ("folds binary", lambda t: spec_file(t, "folds: !!binary aGVsbG8=\n"), "'folds' must be a list"),
    ("name binary", lambda t: spec_file(t, "name: !!binary aGVsbG8=\n"), "'name' must be a list, a number or text"),
    ("--set folds a YAML set", setting("folds=!!set {3}"), "'folds' must be a list"),
    # keys and values
    ("unknown top key", setting("colour=red"), "unknown key 'colour'"),
    ("unknown nested key", setting("data.sorce=x"), "data.sorce"),
    ("a kind's setting in the corrector section", setting("corrector.max_rounds=30"), "corrector.xgboost.max_rounds"),
    ("a source's setting in the data section", setting("data.n_images=300"), "data.synthetic.n_images"),
    ("epochs not a number", setting("base_net.epochs=many"), "base_net.epochs"),
    ("epochs a bool", setting("base_net.epochs=true"), "base_net.epochs"),
    ("negative split seed", setting("data.split_seed=-1"), "data.split_seed"),
    ("name escapes storage", setting("name=.."), "'name'"),
    ("name with a slash", setting("name=a/b"), "'name'"),
    ("image size too small", setting("data.image_size=8"), "data.image_size"),
    ("fractions leave no test", setting("data.train_fraction=0.8", "data.correct_fraction=0.3"),
     "data.correct_fraction"),
    ("min epochs over epochs", setting("base_net.epochs=2", "base_net.min_epochs=3"), "base_net.min_epochs"),
    ("heads not dividing 128", setting("base_net.heads=3"), "base_net.heads"),
    ("label smoothing of 1", setting("base_net.label_smoothing=1"), "base_net.label_smoothing"),
    ("unknown objective", setting("corrector.objective=accuracy"), "corrector.objective"),
    ("unknown policy", setting("corrector.policies=[flip]"), "corrector.policies"),
    ("pca dims zero", setting("corrector.pca_dims=0"), "corrector.pca_dims"),
    ("pca dims empty list", setting("corrector.pca_dims=[]"), "corrector.pca_dims"),
    ("unknown tap", setting("features.taps=[conv, eyes]"), "features.taps"),
    ("unknown tracker", setting("tracking={neptune: x}"), "tracking"),
    ("bootstrap of 50 resamples", setting("report.bootstrap=50"), "report.bootstrap"),
    ("confidence level over 1", setting("report.level=1.2"), "report.level"),
    ("search of a non-net key", setting("search={data.n_images: {choice: [1, 2]}}"), "search.data.n_images"),
    ("search space malformed", setting("search={base_net.lr: [1, 2]}"), "search.base_net.lr"),
    ("search loguniform from 0", setting("search={base_net.lr: {loguniform: [0, 0.1]}}"), "both > 0"),
    ("search randint of one bound", setting("search={base_net.epochs: {randint: [3]}}"), "randint needs [low, high]"),
    ("search uniform reversed", setting("search={base_net.lr: {uniform: [0.1, 0.01]}}"), "low < high"),
    ("search uniform of words", setting("search={base_net.lr: {uniform: [a, b]}}"), "two numbers"),
    ("search choice of nothing", setting("search={base_net.lr: {choice: []}}"), "at least one value"),
    ("--set without =", setting("base_net.lr"), "must look like key=value"),
    ("--set under a value", setting("name.x=1"), "'name' is not a section"),
    ("invalid group pattern", setting("data.group_pattern=(S"), "data.group_pattern"),
    ("unknown source", setting("data.source=hdf5"), "data.source"),
    # the net and its taps (checked on the net built once, before anything is written)
    ("unknown arch", setting("base_net.arch=resnet81"), "close names: resnet18"),
    ("module not importing", setting("base_net.arch=no_such_pkg:Net"), "does not import"),
    ("module not a module class", setting("base_net.arch=user_nets:NotAModule"), "not an nn.Module"),
    ("net output not [B, K]", setting("base_net.arch=user_nets:WrongOutput"), "not [B, K]"),
    ("tap node missing", setting("base_net.arch=resnet18", "features.taps=[layer5]"), "close names"),
    ("arch and module both", setting("base_net.arch=resnet18", "base_net.module=user_nets:TinyNet"),
     "base_net.module"),
    ("class name not in the data", lambda t: ["trial", SMOKE, "--fold", "contempt", "--set", f"storage={t}/out"],
     "neither a class label nor a class name"),
    ("data.classes of the wrong length", setting("data.classes=[a, b, c]"), "lists 3 names"),
    ("bad fold list", setting("folds=[-1]"), "folds"),
    # the data
    ("data path missing", lambda t: data_cmd(t, t / "missing"), "does not exist"),
    ("folder without parquet", lambda t: data_cmd(t, (t / "empty").mkdir() or t / "empty"), "no .parquet file"),
    ("parquet lacks columns", lambda t: data_cmd(t, parquet(t, table().drop(columns="image"))), "lacks column"),
    ("null labels", lambda t: data_cmd(t, parquet(t, table().astype({"label": "Int64"}).assign(
        label=lambda f: f.label.mask(f.index == 3)))), "without nulls"),
    ("float labels", lambda t: data_cmd(t, parquet(t, table().astype({"label": float}))), "integers or strings"),
    ("several datasets in one folder", lambda t: data_cmd(
        t, parquet(t, table(), folder="all/a") and parquet(t, table(), folder="all/b").parent), "2 folders"),
    ("not parquet", lambda t: data_cmd(t, (t / "x.parquet").write_text("a,b\n1,2\n") and t / "x.parquet"),
     "not readable as Parquet"),
    ("parquet mixing bytes and HF structs", lambda t: data_cmd(t, parquet(t, table()) and parquet(
        t, hf_images(table(classes=(4,)).assign(source_name=lambda f: [f"hf-{i}" for i in range(len(f))])),
        "part-001.parquet")), "as struct<bytes, path>; write every file alike"),
    ("parquet image of paths", lambda t: data_cmd(t, parquet(t, table().assign(image="x.png"))),
     "column image must hold encoded image bytes"),
    ("corrupt image", lambda t: data_cmd(t, parquet(t, table().assign(
        image=lambda f: [b"not an image"] + list(f.image[1:])))), "cannot be decoded"),
    ("label out of the rafdb preset", lambda t: data_cmd(t, parquet(t, table(classes=(1, 2, 9))), "parquet",
                                                          "--set", "data.classes=rafdb"), "outside RAF-DB"),
    ("two classes", lambda t: data_cmd(t, parquet(t, table(classes=(1, 2)))), "at least 3"),
    ("class too small", lambda t: data_cmd(t, parquet(t, pd.concat([table(), table(3, (4,))]).assign(
        source_name=lambda f: [f"i{i}" for i in range(len(f))]))), "has only 3 images"),
    ("duplicate sample ids", lambda t: data_cmd(t, parquet(t, table().assign(source_name="same.png"))),
     "occurs 30 times"),
    ("fer2013 lacks columns", lambda t: fer_csv(t, "label,pixels\n0,1 2 3 4\n"), "lacks the columns"),
    ("fer2013 words as pixels", lambda t: fer_csv(t, "emotion,pixels,Usage\n0,a b c d,Training\n"),
     "space-separated numbers"),
    ("fer2013 comma pixels", lambda t: fer_csv(t, 'emotion,pixels,Usage\n0,"1,2,3,4",Training\n'),
     "space-separated numbers"),
    ("fer2013 bad emotion", lambda t: fer_csv(t, "emotion,pixels,Usage\n9,1 2 3 4,Training\n"), "FER2013 code"),
    ("fer2013 not square", lambda t: fer_csv(t, "emotion,pixels,Usage\n0,1 2 3,Training\n"), "not a square"),
    ("fer2013 is binary", lambda t: data_cmd(t, (t / "f.csv").write_bytes(b"\xff\xfe\x00\x81" * 50) and t / "f.csv",
                                             "fer2013"), "not a text CSV"),
    ("rafdb without labels", lambda t: data_cmd(t, (t / "basic").mkdir() or t / "basic", "rafdb"),
     "RAF-DB label file"),
    ("hidden class folder with images", lambda t: data_cmd(t, class_folders(t, ("a", "b", "c", ".d")), "folder"),
     "its name starts with '.'"),
    ("folder with unknown class", lambda t: data_cmd(t, (t / "imgs" / "bored").mkdir(parents=True) or t / "imgs",
                                                     "folder"), "bored"),
    ("group pattern not matching", lambda t: data_cmd(t, parquet(t, table()), "parquet",
                                                      "--set", "data.group_pattern=(S\\d+)_"), "does not match"),
    # trial, collect, best
    ("fold not a class", lambda t: ["trial", SMOKE, "--fold", "99", "--set", f"storage={t}/out"], "fold '99'"),
    ("fold all", lambda t: ["trial", SMOKE, "--fold", "all", "--set", f"storage={t}/out"], "neither a class label"),
    ("fold a word", lambda t: ["trial", SMOKE, "--fold", "x3", "--set", f"storage={t}/out"], "neither a class label"),
    ("fold a superscript digit", lambda t: ["trial", SMOKE, "--fold", "²", "--set", f"storage={t}/out"],
     "neither a class label"),
    ("cuda without a GPU", setting("base_net.device=cuda"), "no GPU is visible"),
    ("storage is a file", lambda t: (t / "afile").write_text("x") and
     ["trial", SMOKE, "--fold", "3", "--set", f"storage={t}/afile"], "is a file"),
    ("collect an empty run", lambda t: ["collect", str(t)], "no results"),
    ("best an empty run", lambda t: ["best", str(t)], "no results"),
    ("collect a cut result", bad_result, "is unreadable"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="one case needs a machine without a GPU")
@pytest.mark.parametrize("name, argv, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, name, argv, expect):
    args = argv(tmp_path)
    files = lambda: sorted(p for p in tmp_path.rglob("*") if p.is_file() and ".cache" not in p.parts)
    before = files()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("correctsweep: error:"), err
    assert expect in err
    assert files() == before  # no spec.yaml, result or half-written file left behind (the decoded-data
    # cache aside: it holds the dataset as read, whatever the spec asks of it)


SLOW_PATTERNS = [  # data.group_pattern's time is bounded: one line, not a hang
    ("nested repetition", "(a+)+$"),
    ("repeated alternation", "(a|aa)+$"),
    ("nested stars", "(a*)*b$"),
]


@pytest.mark.parametrize("name, pattern", SLOW_PATTERNS, ids=[c[0] for c in SLOW_PATTERNS])
def test_a_pattern_that_backtracks_without_end_is_one_line(tmp_path, capsys, monkeypatch, name, pattern):
    from correctsweep import data

    monkeypatch.setattr(data, "GROUP_PATTERN_SECONDS", 0.5)
    frame = table().assign(source_name=lambda f: ["a" * 40 + f"!{i}" for i in range(len(f))])
    args = data_cmd(tmp_path, parquet(tmp_path, frame), "parquet", "--set", f"data.group_pattern='{pattern}'")
    started = time.monotonic()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes more than 0.5 s" in err and time.monotonic() - started < 30, err


def test_drill_covers_at_least_40_kinds():
    assert len(CASES) >= 40


def _ctrl_c(args):
    raise KeyboardInterrupt


def _ctrl_c_in_a_library_cleanup(args):
    """Optuna's journal lock, interrupted inside its release, unlinks its file again: FileNotFoundError."""
    try:
        raise KeyboardInterrupt
    finally:
        raise FileNotFoundError("study.journal.lock.rename")


@pytest.mark.parametrize("command", [_ctrl_c, _ctrl_c_in_a_library_cleanup])
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, command):
    monkeypatch.setattr(cli, "cmd_data", command)
    assert cli.main(["data", SMOKE]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err


def test_an_error_without_a_ctrl_c_behind_it_is_not_called_an_interrupt(monkeypatch):
    def broken(args):
        raise FileNotFoundError("a bug of ours")

    monkeypatch.setattr(cli, "cmd_data", broken)
    with pytest.raises(FileNotFoundError, match="a bug of ours"):
        cli.main(["data", SMOKE])


FINE_DATA = [  # data other tools and hands make, read as meant
    ("colour set whose first images are grayscale", lambda t: data_cmd(t, class_folders(t), "folder"),
     "60 images, 3 classes, 3x"),
    ("grayscale set", lambda t: data_cmd(t, class_folders(t, rest=png), "folder"), "60 images, 3 classes, 1x"),
    ("grayscale set stored as RGB after its first image", lambda t: data_cmd(t, class_folders(
        t, rest=lambda v: encode_png(torch.full((3, 12, 12), v, dtype=torch.uint8)).numpy().tobytes()), "folder"),
     "60 images, 3 classes, 1x"),
    ("parquet of HF image structs", lambda t: data_cmd(t, parquet(t, hf_images(table(20)))), "60 images, 3 classes"),
    ("hidden folders without images", lambda t: (class_folders(t), (t / "imgs" / ".git").mkdir(),
                                                 (t / "imgs" / ".git" / "HEAD").write_text("ref"),
                                                 data_cmd(t, t / "imgs", "folder"))[-1], "60 images, 3 classes"),
]


@pytest.mark.parametrize("name, argv, expect", FINE_DATA, ids=[c[0] for c in FINE_DATA])
def test_data_from_other_hands_is_read_as_meant(tmp_path, capsys, name, argv, expect):
    assert cli.main(argv(tmp_path)) == 0
    assert expect in capsys.readouterr().out


def test_a_byte_order_mark_is_not_a_column(tmp_path, capsys):
    pixels = " ".join(["7"] * 16)
    rows = "".join(f"{c},{pixels},Training\n" for c in (0, 3, 6) for _ in range(40))
    (tmp_path / "fer.csv").write_text("\ufeffemotion,pixels,Usage\n" + rows, encoding="utf-8")
    assert cli.main(data_cmd(tmp_path, tmp_path / "fer.csv", "fer2013")) == 0
    assert "120 images, 3 classes" in capsys.readouterr().out


def test_5e_4_is_a_float(tmp_path):
    assert load_spec(SMOKE, ["base_net.lr=5e-4"]).base_net.lr == 5e-4


def test_written_files_follow_the_umask(tmp_path):
    import os

    from correctsweep.atomic import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_torn_journal_is_cut_back(tmp_path):
    from correctsweep.corrector_journal import repair_journal

    path = tmp_path / "study.journal"
    path.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    assert repair_journal(path) and path.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n'
    assert not repair_journal(path)


def test_second_writer_is_told_who_holds_the_fold(tmp_path):
    from correctsweep.errors import CorrectsweepError
    from correctsweep.layout import RunLayout

    layout = RunLayout(tmp_path)
    with layout.lock("3", 0, "k"):
        with pytest.raises(CorrectsweepError, match=r"fold 3 seed 0 .* is being run by pid \d+"):
            with layout.lock("3", 0, "k"):
                pass
        with layout.lock("3", 0, "other-net"):  # another net of the same fold is another writer's
            pass
    with layout.lock("3", 0, "k"):  # released
        pass


def test_unique_ids_and_np_arrays():
    # a guard that the table helper above builds what the data cases assume
    frame = table()
    assert frame.source_name.is_unique and set(np.unique(frame.label)) == {1, 2, 3}
