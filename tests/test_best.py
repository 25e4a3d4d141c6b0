"""best on a run directory built by hand (known studies), and collect + best after the tiny run's sweep."""
import json

import pandas as pd
import pytest
import xgboost as xgb
import yaml

from correctsweep.best import select_best
from correctsweep.cli import main
from correctsweep.errors import CorrectsweepError
from correctsweep.predict import locate
from correctsweep.train import load_model

FC, BOTH = ["fc"], ["fc", "logits"]


@pytest.fixture
def run(run_builder):
    # (cv score, policy, taps, tau) of each study's complete trials
    return (run_builder([1, 2, "none"], [0, 1])
            .add("1", 0, corrected=2, trials=[(0.60, "override", FC, 0.3), (0.55, "new_class", BOTH, 0.4),
                                              (0.50, "override", ["logits"], 0.5)])
            .add("1", 1, corrected=3, trials=[(0.40, "override", FC, 0.3), (0.70, "new_class", BOTH, 0.2)])
            .add("2", 0, corrected=1, trials=[(0.65, "override", FC, 0.3), (0.62, "new_class", BOTH, 0.5)])
            .add("none", 0, trials=[(0.80, "override", FC, 0.3), (0.75, "override", ["logits"], 0.1)]))


def test_best_config_per_fold_and_overall(run):
    best = select_best(run.dir)
    config = yaml.safe_load((best / "best_config.yaml").read_text())
    assert config["objective"] == "balanced_accuracy"
    folds = {f["fold"]: f for f in config["folds"]}
    assert list(folds) == ["1", "2", "none"]
    one = folds["1"]  # seed 1's search scored 0.70 against seed 0's 0.60
    chosen = one["corrector"]  # the search's record, as its winner.json holds it
    assert (one["seed"], chosen["policy"], chosen["taps"], chosen["tau"], chosen["cv_score"]) == \
        (1, "new_class", BOTH, 0.2, 0.70)
    assert chosen == json.loads((run.dir / one["source"]["corrector"] / "winner.json").read_text())
    assert one["runner_up"]["policy"] == "override" and one["runner_up"]["margin"] == pytest.approx(0.30)
    assert one["test_score"] == pytest.approx((0.75 + 1 + 1) / 3)  # balanced accuracy of h on test
    assert folds["2"]["runner_up"]["taps"] == BOTH and folds["2"]["runner_up"]["margin"] == pytest.approx(0.03)
    # new_class with fc+logits was tried in all 3 results that allow it (mean 0.623); override with fc in
    # all 4 (0.6125); override with logits scores 0.625 but was tried in only 2 of 4, so it ranks last
    overall = config["overall"]
    assert (overall["policy"], overall["taps"], overall["tried_in"]) == ("new_class", BOTH, "3 of 3 results")
    assert overall["mean_cv_score"] == pytest.approx((0.55 + 0.70 + 0.62) / 3)
    assert (overall["runner_up"]["policy"], overall["runner_up"]["taps"]) == ("override", FC)
    assert overall["runner_up"]["margin"] == pytest.approx((0.55 + 0.70 + 0.62) / 3 - 0.6125)


def test_artifacts_are_copied_and_named_relative_to_best(run):
    best = select_best(run.dir)
    config = yaml.safe_load((best / "best_config.yaml").read_text())
    for f in config["folds"]:
        assert set(f["artifacts"]) == {"weights", "net_config", "corrector", "corrector_config"}
        for name, rel in f["artifacts"].items():
            assert rel.startswith(f"fold={f['fold']}/seed={f['seed']}/")
            source = run.dir / f["source"]["model" if name in ("weights", "net_config") else "corrector"]
            assert (best / rel).read_bytes() == (source / rel.rsplit("/", 1)[1]).read_bytes()
    assert not (best / "fold=1" / "seed=0").exists()  # only the chosen seed's artifacts


def test_rationale_names_metric_runner_up_and_margin(run):
    text = (select_best(run.dir) / "rationale.md").read_text()
    assert "**balanced_accuracy**" in text
    assert "Runner-up: override with taps fc, mean CV 0.613 over 4 of 4 results (margin 0.011)" in text
    assert "| 1 | 1 | yes | new_class |" in text and "| 1 | 0 |  | override |" in text


def test_rerun_overwrites_and_errors_keep_the_old_selection(run, capsys):
    select_best(run.dir)
    (run.dir / "results" / "fold=1" / "seed=1.json").unlink()
    best = select_best(run.dir)
    assert (best / "fold=1" / "seed=0").is_dir() and not (best / "fold=1" / "seed=1").exists()
    (run.dir / "models" / "fold=2" / "seed=0" / "net-k" / "weights.pt").unlink()
    assert main(["best", str(run.dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights.pt is missing" in err
    assert (best / "fold=2" / "seed=0" / "net" / "weights.pt").is_file()
    assert not list(run.dir.glob(".tmp-*"))


def test_a_selection_of_another_version_is_refused_in_one_line(run):
    best = select_best(run.dir)
    config = yaml.safe_load((best / "best_config.yaml").read_text())
    for fold in config["folds"]:  # as a version before the record wrote it: the corrector's fields flat
        fold |= fold.pop("corrector")
    (best / "best_config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CorrectsweepError) as refused:
        locate(run.dir, fold="1")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "best_config.yaml is unreadable as this version's selection" in message
    assert "rerun `correctsweep best`" in message


def test_collect_and_best_after_a_real_run(tiny_run):
    """What the sweep's collect and best left in the tiny run (folds 3 and none)."""
    report = tiny_run / "report"
    assert "Missing" not in (report / "report.md").read_text()
    power = pd.read_csv(report / "tpr_h_power.csv", index_col="class")
    assert list(power.columns) == ["3", "full", "P"] and power.full.notna().all()
    config = yaml.safe_load((tiny_run / "best" / "best_config.yaml").read_text())
    assert [f["fold"] for f in config["folds"]] == ["3", "none"]
    three = config["folds"][0]["artifacts"]
    model, meta = load_model(tiny_run / "best" / three["weights"].rsplit("/", 1)[0])
    assert meta["excluded"] == 3
    assert xgb.Booster(model_file=str(tiny_run / "best" / three["corrector"])).num_boosted_rounds() >= 1


def test_collect_and_best_commands_on_a_real_run(tiny_run, tiny_copy):
    """The CLI's collect and best on a copy of a real run redo what the sweep wrote (the run's own path aside)."""
    def outputs(run):
        files = [p for folder in ("report", "best") for p in (run / folder).rglob("*") if p.is_file()]
        return {p.relative_to(run): p.read_bytes().replace(str(run).encode(), b"RUN")
                for p in files if p.suffix != ".png"}  # a figure's bytes may differ between two renderings

    assert main(["collect", str(tiny_copy)]) == 0 and main(["best", str(tiny_copy)]) == 0
    assert outputs(tiny_copy) == outputs(tiny_run)
