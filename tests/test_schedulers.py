"""Tune's trial schedulers in the spec (`scheduler:`): the one-line refusals, Ray's median rule made safe for
results without an epoch, and a real ASHA sweep whose stopped sample is recorded and left out of the selection."""
import copy
import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY

from correctsweep.cli import main
from correctsweep.config import spec_from_dict
from correctsweep.errors import SpecError
from correctsweep.schedulers import make, was_stopped

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"base_net.lr": {"grid": [3e-3, 1e-7]}}


def _spec(**extra):
    return spec_from_dict({"folds": ["none"], "search": SEARCH} | extra)


@pytest.mark.parametrize("extra, words", [
    ({"folds": [3, "none"]}, "one fold and one seed"),
    ({"folds": ["all"]}, "one fold and one seed"),
    ({"seeds": [0, 1]}, "one fold and one seed"),
    ({"search": {}}, "has none; add a search"),
    ({"scheduler": {"asha": {"grace_period": 50}}}, "scheduler.asha.grace_period"),
    ({"scheduler": {"asha": {"reduction_factor": 1}}}, "scheduler.asha.reduction_factor"),
    ({"scheduler": "hyperband"}, "scheduler.name"),
])
def test_a_scheduler_the_spec_cannot_use_is_one_line(extra, words):
    raw = {"folds": ["none"], "search": SEARCH, "scheduler": "asha"} | extra
    with pytest.raises(SpecError, match=words) as e:
        spec_from_dict(raw)
    assert "\n" not in str(e.value)


def test_the_scheduler_is_named_alone_or_with_its_settings_and_reads_back():
    assert _spec().scheduler.name is None and make(_spec()) is None
    short = _spec(scheduler="median_stopping")
    assert short.scheduler.name == "median_stopping" and short.scheduler.settings["median_stopping"].grace_period == 5
    given = _spec(scheduler={"asha": {"grace_period": 2, "reduction_factor": 2}})
    assert given.scheduler.settings["asha"].reduction_factor == 2.0
    assert spec_from_dict(yaml.safe_load(given.to_yaml())).scheduler == given.scheduler  # spec.yaml's form
    asha = make(given)
    assert (asha._time_attr, asha._metric, asha._max_t, asha._stop_last_trials) == ("epoch", "val_accuracy", 40, False)


class _Trial:
    def __init__(self, name):
        self.trial_id = name


def test_the_median_rule_passes_over_a_finished_trial_s_corrector_result():
    # Ray's own rule records a finished trial's last result, here the corrector's (no epoch), and its next
    # median raised KeyError('epoch')
    rule = make(_spec(scheduler={"median_stopping": {"grace_period": 1, "min_samples_required": 1}}))
    good, bad = _Trial("good"), _Trial("bad")
    for epoch in (1, 2):
        assert rule.on_trial_result(None, good, {"epoch": epoch, "val_accuracy": 0.8}) == "CONTINUE"
    rule.on_trial_complete(None, good, {"stage": "done", "cv_score": 0.7})
    assert rule.on_trial_result(None, bad, {"stage": "corrector", "cv_score": 0.5}) == "CONTINUE"  # no metric
    assert rule.on_trial_result(None, bad, {"epoch": 1, "val_accuracy": 0.3}) == "STOP"


def test_a_stop_is_told_apart_from_an_interrupted_trial():
    assert was_stopped({"stage": "train", "epoch": 1, "done": True})
    assert not was_stopped({"stage": "train", "epoch": 1, "done": False})  # Ctrl-C: Tune saved, not done
    assert not was_stopped({"stage": "done", "done": True}) and not was_stopped(None)


@pytest.mark.slow  # a sweep of its own: two samples, one stopped after its first epoch
def test_asha_stops_the_weak_sample_and_collect_and_best_leave_it_out(tmp_path, shared_ray, capsys, monkeypatch):
    spec = copy.deepcopy(TINY) | {"name": "asha", "storage": str(tmp_path), "folds": ["none"], "search": SEARCH,
                                  "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}}
    spec["base_net"] |= {"epochs": 2, "patience": 2}
    spec["corrector"] |= {"kinds": ["xgboost"]}
    spec["detectors"] = {"names": []}
    spec["resources"] |= {"max_concurrent": 1}  # the good sample sets the rung's bar first
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0  # a stop is not a Ctrl-C (exit 130)
    out = capsys.readouterr().out
    assert "stopped by the scheduler at epoch 1" in out and "1 of 2 trials succeeded, 1 stopped early" in out
    run = tmp_path / "asha"
    (stopped,) = (run / "results" / "fold=none" / "seed=0.stopped").glob("net-*.json")
    record = json.loads(stopped.read_text())
    assert record["sampled"] == {"base_net.lr": 1e-7} and record["epoch"] == 1 and record["scheduler"] == "asha"
    (finished,) = (run / "results" / "fold=none" / "seed=0.samples").glob("net-*.json")
    kept = json.loads(finished.read_text())["net_key"]
    assert stopped.name != finished.name and not (run / "models" / "fold=none" / "seed=0" / stopped.stem).exists()
    chosen = yaml.safe_load((run / "best" / "best_config.yaml").read_text())["folds"]
    assert [c["net_key"] for c in chosen] == [kept]
    assert "1 `search` sample(s) stopped early" in (run / "report" / "report.md").read_text()
    assert "1 `search` sample(s) stopped early" in (run / "best" / "rationale.md").read_text()

    # a result planted under the stopped net's key, better by CV, is still left out of the selection
    planted = json.loads(finished.read_text())
    planted["net_key"], planted["corrector"]["cv_score"] = record["net_key"], 1.0
    (finished.parent / stopped.name).write_text(json.dumps(planted))
    assert main(["best", str(run)]) == 0
    assert [c["net_key"] for c in yaml.safe_load((run / "best" / "best_config.yaml").read_text())["folds"]] == [kept]

    # the search side by side, the stopped sample included (benchmarks/search_curves.py, run as printed)
    monkeypatch.setattr(sys, "argv", ["search_curves.py", str(run), str(tmp_path / "search")])
    runpy.run_path(str(ROOT / "benchmarks" / "search_curves.py"), run_name="__main__")
    trials = pd.read_csv(tmp_path / "search" / "trials.csv").set_index("status")
    assert sorted(trials.index) == ["finished", "stopped"] and trials.loc["stopped", "lr"] == 1e-7
    assert trials.loc["stopped", "epochs"] == 1 and 0 <= trials.loc["finished", "accuracy_f"] <= 1
    curves = pd.read_csv(tmp_path / "search" / "curves.csv")
    assert len(curves) == 1 + trials.loc["finished", "epochs"] and (tmp_path / "search" / "curves.png").is_file()


def test_search_curves_shows_a_retried_sample_by_its_last_attempt():
    last_attempt = runpy.run_path(str(ROOT / "benchmarks" / "search_curves.py"))["last_attempt"]
    reports = [{"stage": "train", "epoch": e} for e in (1, 2, 3, 1, 2)] + [{"stage": "done"}]
    assert last_attempt(reports) == reports[3:]
    assert last_attempt(reports[:3]) == reports[:3]
