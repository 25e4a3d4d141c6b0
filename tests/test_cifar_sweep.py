"""A whole sweep of a torchvision net on a 10-class set in the CIFAR-10 layout: every fold and the full model."""
import pytest
from layouts import CIFAR10_NAMES, write_cifar10

from correctsweep.cli import main
from correctsweep.results import TrialResult


@pytest.mark.slow
def test_resnet18_sweep_over_ten_named_classes(tmp_path, shared_ray):
    write_cifar10(tmp_path / "cifar", train_per_class=12, test_per_class=5)
    # the committed CIFAR-10 spec on a tiny budget: 16 px (a quarter of the pixels; ResNet-18 still ends on a
    # 1x1 map) and the report's bootstrap at its floor
    sets = [f"storage={tmp_path}", "name=cifar-smoke", f"data.path={tmp_path / 'cifar'}", "data.image_size=16",
            "report.bootstrap=100", "base_net.epochs=1",
            "base_net.patience=1", "base_net.min_epochs=0", "corrector.n_candidates=2",
            "corrector.xgboost.pca_dims=null", "corrector.xgboost.max_rounds=20", "corrector.tune_taps=false",
            "base_net.threads=1", "corrector.threads=1"]
    assert main(["sweep", "sweeps/cifar10.yaml", *[a for s in sets for a in ("--set", s)]]) == 0
    run = tmp_path / "cifar-smoke"
    results = {r.fold: r for r in map(TrialResult.read, run.glob("results/fold=*/seed=0.json"))}
    assert set(results) == {*map(str, range(10)), "none"}
    assert all(r.net == "resnet18" and r.class_names == CIFAR10_NAMES for r in results.values())
    report = (run / "report" / "report.md").read_text()
    assert "10 classes; base net resnet18" in report
    assert all(f"| {i} {name} |" in report for i, name in enumerate(CIFAR10_NAMES))
    assert "### Fold 3 cat" not in report  # one method: no methods section, but the folds are named
    assert "fold 3 cat seed 0" in report and (run / "best" / "best_config.yaml").is_file()
