"""docs/correct-your-model.md's walk-throughs, run as printed (the commands with a small corrector budget added):
a Lightning-style checkpoint as fold none, a folder of DDP leave-one-class-out ResNet-18 checkpoints swept on the
CIFAR-10 layout, and a features table of a scikit-learn classifier on the digits swept with no image or net,
whose `predict` on the table's rows reproduces h."""
import re
import runpy
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from layouts import CIFAR10_NAMES, write_cifar10

from correctsweep.cli import main
from correctsweep.results import TrialResult

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "correct-your-model.md"
BUDGET = ["corrector.kinds=[xgboost]", "corrector.n_candidates=2", "corrector.cv_splits=2",
          "corrector.xgboost.max_rounds=20", "corrector.xgboost.pca_dims=null", "corrector.tune_taps=false",
          "corrector.threads=1", "base_net.threads=1", "corrector.timeout_s=null", "report.bootstrap=100"]


def blocks(language: str) -> dict[str, str]:
    """The page's blocks of `language` by the file each says it is (its first line)."""
    found = re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)
    return {block.splitlines()[0].removeprefix("# "): block for block in found}


def commands() -> list[list[str]]:
    """The page's shell commands, in order, each as correctsweep's arguments."""
    found = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)
    return [shlex.split(line)[1:] for block in found for line in block.strip().splitlines()]


def script(name: str) -> None:
    """The page's Python block `name`, saved under its name in the working folder and run there."""
    Path(name).write_text(blocks("python")[name])
    runpy.run_path(name)


def run(args: list[str]) -> None:
    budget = [a for s in BUDGET for a in ("--set", s)] if args[0] in ("trial", "sweep") else []
    assert main([*args, *budget]) == 0, args


@pytest.fixture
def cifar_here(tmp_path, monkeypatch):
    """A working folder holding sweeps/cifar10.yaml and a tiny set in the CIFAR-10 layout at data/cifar, 16 px
    (the spec's data.path)."""
    (tmp_path / "sweeps").mkdir()
    spec = (ROOT / "sweeps" / "cifar10.yaml").read_text().replace("image_size: 32", "image_size: 16")
    (tmp_path / "sweeps" / "cifar10.yaml").write_text(spec)
    write_cifar10(tmp_path / "data" / "cifar", train_per_class=12, test_per_class=4)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_one_deployed_checkpoint_as_fold_none(cifar_here):
    script("stand_in_checkpoint.py")
    trial = commands()[0]
    assert trial[:2] == ["trial", "sweeps/cifar10.yaml"]
    run(trial)
    (result,) = map(TrialResult.read, (cifar_here / "outputs" / "cifar10" / "results").rglob("*.json"))
    assert result.fold == "none" and result.net == "resnet18"
    assert result.train["checkpoint"].endswith("ckpt/resnet18.ckpt") and "epochs_run" not in result.train


@pytest.mark.slow
def test_a_folder_of_leave_one_class_out_checkpoints_is_swept(cifar_here, shared_ray):
    """Also the whole sweep of the committed CIFAR-10 spec over ten named classes, every fold and the full model
    (training a ResNet-18 is tests/test_nets.py's smoke trial)."""
    script("stand_in_folder.py")
    sweep = commands()[1]
    assert sweep[:2] == ["sweep", "sweeps/cifar10.yaml"]
    run(sweep)
    run_dir = cifar_here / "outputs" / "cifar10"
    results = {r.fold: r for r in map(TrialResult.read, run_dir.glob("results/fold=*/seed=0.json"))}
    assert set(results) == {*map(str, range(10)), "none"}
    assert all(r.net == "resnet18" and r.class_names == CIFAR10_NAMES for r in results.values())
    folds = pd.read_csv(run_dir / "report" / "folds.csv", dtype={"fold": str})
    assert (folds.checkpoint == [f"resnet18_cifar10_without{j}.pth" for j in folds.fold]).all()
    assert folds.epochs_run.isna().all()  # nothing was trained
    report = (run_dir / "report" / "report.md").read_text()
    assert "10 classes; base net resnet18" in report
    assert all(f"| {i} {name} |" in report for i, name in enumerate(CIFAR10_NAMES))
    assert "### Fold 3 cat" not in report  # one method: no methods section, but the folds are named
    assert "fold 3 cat seed 0" in report and (run_dir / "best" / "best_config.yaml").is_file()


@pytest.mark.slow
def test_a_features_table_of_a_scikit_learn_model_is_swept_and_predicted(tmp_path, monkeypatch, shared_ray):
    monkeypatch.chdir(tmp_path)
    script("digits_table.py")
    (tmp_path / "digits.yaml").write_text(blocks("yaml")["digits.yaml"])
    sweep, predict = commands()[2:]
    run(sweep)
    run_dir = tmp_path / "outputs" / "digits"
    folds = pd.read_csv(run_dir / "report" / "folds.csv", dtype={"fold": str})
    assert sorted(folds.fold) == sorted([*map(str, range(10)), "none"])
    methods = pd.read_csv(run_dir / "report" / "methods.csv")
    assert {"xgboost", "msp", "energy", "knn"} == set(methods.method)  # the budget's one kind, the detectors
    report = (run_dir / "report" / "report.md").read_text()
    assert "base net features" in report
    assert not (run_dir / "models").exists() and not list((run_dir / "best").rglob("weights.pt"))

    run(predict)  # h on the fold's own rows, by the table's columns: the trial's h on its test rows
    h = pd.read_csv(tmp_path / "h.csv")
    (result,) = [TrialResult.read(p) for p in (run_dir / "results" / "fold=3").glob("*.json")]
    published = pd.read_parquet(run_dir / result.paths.predictions["test"])
    both = published.merge(h, left_on="sample_id", right_on="id")
    assert len(both) == len(published) > 0
    assert (both[f"h_{result.corrector.kind}"] == both.pred_h).all() and (both.pred_f_x == both.pred_f_y).all()
    shutil.rmtree(run_dir / "report")  # the run directory stays readable without it
