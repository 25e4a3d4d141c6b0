"""base_net.weights: a sweep from checkpoints of the tiny run's own nets reproduces it exactly, and every bad
checkpoint is one line and exit code 2 before anything is written."""
import re
import shutil
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from conftest import TINY, sets

from correctsweep import checkpoints
from correctsweep.cli import main
from correctsweep.config import load_spec
from correctsweep.errors import CorrectsweepError
from correctsweep.features import read_split
from correctsweep.keys import net_key
from correctsweep.nets.paper import PaperNet
from correctsweep.results import TrialResult

TEMPLATE = "base_net.weights={}/without{{excluded}}.pt"
# figures a trained f and the same f from a checkpoint differ in by design: its training record, the search's time
NOT_COMPARED = ["epochs_run", "best_epoch", "checkpoint", "search_seconds"]


def body_weights(run, fold):
    """The tiny run's net of `fold` as a plain state_dict of its body, as a user's script would save it."""
    (weights,) = (run / "models" / f"fold={fold}" / "seed=0").glob("net-*/weights.pt")
    saved = torch.load(weights, weights_only=True)
    return {k.removeprefix("body."): v for k, v in saved.items() if k != "logit_mask"}


def test_a_run_from_checkpoints_reproduces_the_trained_run(tiny_run, tiny_spec, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(body_weights(tiny_run, 3), ckpt / "without3.pt")  # bare
    lightning = {f"model.{k}": v for k, v in body_weights(tiny_run, "none").items()}
    torch.save({"epoch": 1, "global_step": 7, "state_dict": lightning}, ckpt / "withoutnone.pt")
    storage = tmp_path / "storage"
    common = sets(f"storage={storage}", TEMPLATE.format(ckpt), f"data.cache_dir={tiny_run.parent / '.cache'}")
    for fold in ("3", "none"):
        assert main(["trial", str(tiny_spec), "--fold", fold, *common]) == 0
    assert main(["collect", str(storage / TINY["name"])]) == 0
    run = storage / TINY["name"]

    for fold in ("3", "none"):
        for split in ("correct", "test"):
            (ours,) = (run / "features" / f"fold={fold}" / "seed=0" / f"split={split}").glob("*.parquet")
            (theirs,) = (tiny_run / "features" / f"fold={fold}" / "seed=0" / f"split={split}").glob("*.parquet")
            ours, theirs = read_split(ours), read_split(theirs)
            assert (ours.pred_f == theirs.pred_f).all() and list(ours.taps) == list(theirs.taps)
            assert all(np.array_equal(ours.taps[t], theirs.taps[t], equal_nan=True) for t in ours.taps)
    folds = pd.read_csv(run / "report" / "folds.csv")
    trained = pd.read_csv(tiny_run / "report" / "folds.csv")
    pd.testing.assert_frame_equal(folds.drop(columns=NOT_COMPARED), trained.drop(columns=NOT_COMPARED))
    assert list(folds.checkpoint) == ["without3.pt", "withoutnone.pt"] and folds.epochs_run.isna().all()
    result = TrialResult.read(run / "results" / "fold=3" / "seed=0.json")
    assert result.train["checkpoint"] == str(ckpt / "without3.pt") and len(result.train["checkpoint_sha256"]) == 64


    # replaced after its check, a checkpoint is refused when the trial reads it, and keys another net
    spec = load_spec(tiny_spec, [TEMPLATE.format(ckpt)])
    classes = [1, 2, 3, 4, 5, 6, 7]
    names = {c: str(c) for c in classes}
    planned = checkpoints.plan(spec.base_net, "3", 0, classes, names)
    torch.save(lightning, ckpt / "without3.pt")
    with pytest.raises(CorrectsweepError, match="does not match the checksum"):
        planned.load(spec.base_net, 7, 2)
    replaced = checkpoints.plan(spec.base_net, "3", 0, classes, names)
    assert net_key(spec, "3", 0, replaced.sha256) != net_key(spec, "3", 0, planned.sha256) == result.net_key


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """One decoded-data cache for the cases: each decodes the tiny data once at most."""
    return tmp_path_factory.mktemp("cache")


def paper(num_classes):
    return PaperNet(num_classes).state_dict()


# what is at the template's path for fold 3 -> what the one line says
BAD = [
    (None, "no checkpoint {ckpt}/without3.pt for fold 3 seed 0"),
    (b"not a checkpoint", "does not load with torch.load\\(weights_only=True\\)"),
    # a Lightning checkpoint holding an object weights_only does not admit: refused, never unpickled
    (lambda: {"state_dict": paper(7), "hyper_parameters": PurePosixPath("x")}, "does not load with torch.load"),
    ([1, 2, 3], "holds no state_dict"),
    ({"state_dict": {"step": 3}}, "holds no state_dict"),
    (lambda: paper(5), "its classifier out has 5 outputs, but the data has 7 classes"),
    (lambda: torchvision.models.resnet18(num_classes=7).state_dict(),
     "does not fit base_net.arch paper: missing convs.0.0.weight \\(and \\d+ more\\), unexpected conv1.weight "
     "\\(and \\d+ more\\)"),
    (lambda: {k: v for k, v in paper(7).items() if k != "fc.bias"},
     "does not fit base_net.arch paper: missing fc.bias;"),
    (lambda: paper(7) | {"fc.weight": torch.zeros(64, 128)}, "fc.weight has shape \\(64, 128\\), the arch's "
                                                             "\\(128, 128\\)"),
]


@pytest.mark.parametrize("content, line", BAD)
def test_a_bad_checkpoint_is_one_line_before_anything_is_written(content, line, tiny_spec, data_cache, tmp_path,
                                                                  capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for fold in ("3", "none"):  # fold none's is sound: the sweep checks every fold up front
        if fold == "none" or content is not None:
            value = paper(7) if fold == "none" else content() if callable(content) else content
            if isinstance(value, bytes):
                (ckpt / f"without{fold}.pt").write_bytes(value)
            else:
                torch.save(value, ckpt / f"without{fold}.pt")
    storage = tmp_path / "storage"
    for command in (["sweep", str(tiny_spec)], ["trial", str(tiny_spec), "--fold", "3"]):
        assert main([*command, *sets(f"storage={storage}", TEMPLATE.format(ckpt), f"data.cache_dir={data_cache}")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert re.search(line.format(ckpt=ckpt), err), err
    assert not any(p.name in ("models", "features", "results", "spec.yaml") for p in storage.rglob("*"))
    shutil.rmtree(storage, ignore_errors=True)


def test_a_sweep_checks_every_fold_before_its_first_trial(tiny_spec, data_cache, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(paper(7), ckpt / "without3.pt")  # fold 3's is sound, fold none's is missing
    storage = tmp_path / "storage"
    assert main(["sweep", str(tiny_spec), *sets(f"storage={storage}", TEMPLATE.format(ckpt),
                                                f"data.cache_dir={data_cache}")]) == 2
    assert f"no checkpoint {ckpt}/withoutnone.pt for fold none seed 0" in capsys.readouterr().err
    assert not (storage / TINY["name"] / "spec.yaml").exists()
