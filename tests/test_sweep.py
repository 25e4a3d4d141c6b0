"""The Ray Tune sweep through its real entry point on tiny budgets: the session's tiny run (conftest), a
retuned corrector, two nodes, kill and resume, object storage and MLflow tracking."""
import json
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import TINY, sets
from ray import tune

from correctsweep.cli import main
from correctsweep.config import spec_from_dict
from correctsweep.errors import SpecError
from correctsweep.sweep import tracking_callbacks

FOLDS = {str(f) for f in TINY["folds"]}


def sweep_args(spec, storage, *extra):
    return ["sweep", str(spec), *sets(f"storage={storage}", *extra)]


def results(run):
    paths = sorted(run.glob("results/fold=*/seed=0.json"))
    return {p.parent.name.split("=")[1]: json.loads(p.read_text()) for p in paths}


def tune_terminated(run) -> int:
    """How many trials the sweep's record of Tune's state says have finished: a resume restores that record
    (tune_state), so these are the trials it will not rerun."""
    from correctsweep.tune_state import _read_record

    count = 0
    for record in run.glob("tune-*.state.json"):
        try:
            files = _read_record(str(record))
        except (OSError, ValueError, KeyError):  # caught mid-write: not recorded yet
            continue
        for name, data in files.items():
            if name.startswith("experiment_state-"):
                count += sum(json.loads(state)["status"] == "TERMINATED" for state, _ in json.loads(data)["trial_data"])
    return count


def test_local_sweep_runs_every_fold_then_collects_and_selects(tiny_run):
    # the sweep itself (and its exit code 0) is conftest's tiny_run
    assert set(results(tiny_run)) == FOLDS
    assert "fold 3" in (tiny_run / "report" / "report.md").read_text()
    best = yaml.safe_load((tiny_run / "best" / "best_config.yaml").read_text())
    assert best  # the selection's content is checked in test_best; here: the sweep ran it


@pytest.mark.slow  # a second sweep
def test_changed_corrector_reuses_trained_nets(tiny_copy, shared_ray):
    run = tiny_copy
    weights = {p: p.stat().st_mtime_ns for p in run.glob("models/**/weights.pt")}
    searches = {fold: r["paths"]["corrector"] for fold, r in results(run).items()}
    assert len(weights) == len(FOLDS)
    logs = set(run.glob("logs/fold=*.log"))
    # the run's own spec, its corrector certified: loosely, as the one-epoch tiny f is right on a row or two of
    # the ~50 calibration rows
    certified = ["corrector.max_harm=0.9", "corrector.confidence=0.5", "corrector.calibration_fraction=0.4"]
    assert main(["sweep", str(run / "spec.yaml"), *sets(*certified)]) == 0
    out = "".join(p.read_text() for p in set(run.glob("logs/fold=*.log")) - logs)  # the trials' own output
    assert out.count("reusing trained base net") == len(FOLDS) and "training base net" not in out
    assert {p: p.stat().st_mtime_ns for p in run.glob("models/**/weights.pt")} == weights
    assert all(r["paths"]["corrector"] != searches[fold] for fold, r in results(run).items())  # searched anew
    assert len([p for p in run.glob("tune-*") if p.is_dir()]) == 2  # a changed spec: a new Tune experiment
    # every method of every fold certified on the same calibration rows; the report and best say so
    for r in results(run).values():
        certificates = [r["corrector"]["certificate"]] + [m["certificate"] for m in r["methods"].values()]
        assert all(c["max_harm"] == 0.9 and c["calibration_rows"] == certificates[0]["calibration_rows"]
                   for c in certificates)
        assert r["corrector"]["tau"] == r["corrector"]["certificate"]["tau"] and r["frontier"]
    folds = pd.read_csv(run / "report" / "folds.csv")
    assert (folds.harm_bound == 0.9).all() and folds.harm_held.notna().all()
    report = (run / "report" / "report.md").read_text()
    assert "## Headline" in report and "fold × seed results" in report and (run / "report" / "frontier.png").exists()
    assert "**Guarantee**: on new images drawn like `correct`" in (run / "best" / "rationale.md").read_text()


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_trials(tiny_spec, tmp_path, capsys, shared_ray):
    """A real SIGKILL of the whole sweep (driver, its Ray and the trials) part-way, once the sweep has recorded
    Tune's state with the first trial finished; the resume runs here, on the shared Ray. The trials run one
    after the other, 15 epochs each: Tune reuses its worker, so a one-epoch trial could end before the kill."""
    args = sweep_args(tiny_spec, tmp_path, "resources.max_concurrent=1", "base_net.epochs=15",
                      "base_net.min_epochs=15", "base_net.patience=15")
    run = tmp_path / TINY["name"]
    proc = subprocess.Popen([sys.executable, "-m", "correctsweep.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (results(run) and tune_terminated(run)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert results(run) and tune_terminated(run), "no trial finished before the deadline"
    finally:
        # The whole session: the driver, the local Ray it started and that Ray's workers (which lead
        # process groups of their own), and nothing else on the machine.
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
        proc.wait()
    finished = results(run)
    assert len(finished) < len(FOLDS), "the sweep ended before it could be killed"
    stamps = {fold: (run / f"results/fold={fold}/seed=0.json").stat().st_mtime_ns for fold in finished}

    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    resumed = capsys.readouterr().out
    assert set(results(run)) == FOLDS
    for fold, stamp in stamps.items():
        assert f"fold {fold} seed 0: started" not in resumed
        assert (run / f"results/fold={fold}/seed=0.json").stat().st_mtime_ns == stamp
    assert (run / "report" / "report.md").is_file()


def test_a_spec_draws_the_same_search_samples_every_time():
    from ray.tune.experiment import Experiment

    from correctsweep.sweep import search_space, tune_config

    search = {"base_net.lr": {"loguniform": [1e-4, 1e-2]}, "base_net.batch_size": {"choice": [32, 64]}}
    capped = spec_from_dict({"folds": ["none"], "search": search, "resources": {"max_concurrent": 1}})
    assert tune_config(capped).search_alg.max_concurrent == 1  # the cap reaches the generator Tune asks
    spec = spec_from_dict({"folds": [1, "none"], "num_samples": 4, "search": search})

    def draw():
        searcher = tune_config(spec).search_alg
        searcher.add_configurations([Experiment("draw", run=lambda config: None, num_samples=spec.num_samples,
                                                config={"fold": tune.grid_search(["1", "none"])} | search_space(spec))])
        trials = iter(searcher.next_trial, None)
        return [(t.config["fold"], t.config["base_net.lr"], t.config["base_net.batch_size"]) for t in trials]

    first = draw()
    assert len(first) == 8 and len({lr for _, lr, _ in first}) == 8 and all(1e-4 <= lr <= 1e-2 for _, lr, _ in first)
    assert draw() == first


def test_resume_without_an_earlier_sweep_is_a_one_line_error(tmp_path, capsys):
    assert main(["sweep", "sweeps/smoke.yaml", "--set", f"storage={tmp_path}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no sweep of this spec to resume" in err and len(err.strip().splitlines()) == 1


def test_bad_search_space_is_rejected_before_ray_starts(tmp_path, capsys):
    assert main(["sweep", "sweeps/smoke.yaml", "--set", f"storage={tmp_path}",
                 "--set", "search={base_net.lr: {lognormal: [1, 2]}}"]) == 2
    assert "search.base_net.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_to_object_store_uri(tiny_spec, tmp_path, shared_ray):
    """A URI storage (file:// here; s3:// and gs:// go through the same pyarrow filesystems): trials work
    in a local mirror and copy their fold's outputs to the URI, which ends up holding the whole run."""
    assert main(sweep_args(tiny_spec, f"file://{tmp_path}/bucket")) == 0
    remote = tmp_path / "bucket" / TINY["name"]
    assert set(results(remote)) == FOLDS
    assert list((remote / "features" / "fold=3").rglob("*.parquet")) and list(remote.glob("models/**/weights.pt"))
    assert (remote / "report" / "report.md").is_file() and (remote / "best" / "best_config.yaml").is_file()


@pytest.mark.parametrize("key, install", [("mlflow", "pip install -e '.[tracking]'"), ("wandb", "pip install wandb")])
def test_tracking_without_its_package_is_a_one_line_error(monkeypatch, key, install):
    monkeypatch.setitem(sys.modules, key, None)  # what an environment without the package imports
    spec = spec_from_dict({"tracking": {key: "somewhere"}})
    with pytest.raises(SpecError, match=re.escape(install)) as error:
        tracking_callbacks(spec)
    assert len(str(error.value).splitlines()) == 1 and f"tracking.{key}" in str(error.value)


def test_tracking_callbacks_are_tunes_own():
    pytest.importorskip("mlflow")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    assert tracking_callbacks(spec_from_dict({})) == []
    (callback,) = tracking_callbacks(spec_from_dict({"name": "runs", "tracking": {"mlflow": "sqlite:///x.db"}}))
    assert isinstance(callback, MLflowLoggerCallback)
    assert (callback.tracking_uri, callback.experiment_name) == ("sqlite:///x.db", "runs")
    assert not callback.should_save_artifact


def test_sweep_logs_one_mlflow_run_per_trial(tiny_run):
    """The tiny run's sweep tracked to MLflow (conftest adds `tracking` when MLflow is installed)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    spec = yaml.safe_load((tiny_run / "spec.yaml").read_text())
    uri = spec["tracking"]["mlflow"]  # sqlite: MLflow 3 refuses a file:// store unless told to allow it
    trials = list(tiny_run.glob("tune-*/*/params.json"))
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(TINY["name"]).experiment_id])
    assert len(runs) == len(trials) == len(FOLDS)
    out = results(tiny_run)
    for run in runs:
        fold = run.data.params["fold"]
        result = out[fold]
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == "0" and run.data.params["spec/name"] == TINY["name"]  # the trial's config
        assert run.data.metrics["accuracy_h"] == pytest.approx(result["summary"]["accuracy_h"])
        assert run.data.metrics["cv_score"] == pytest.approx(result["corrector"]["cv_score"])
        losses = client.get_metric_history(run.info.run_id, "train_loss")  # one per epoch, as reported
        assert [m.value for m in losses] == pytest.approx([h["train_loss"] for h in result["train"]["history"]])
    gain = next(c["gain"] for c in out["3"]["per_class"] if c["class"] == 3)
    assert {r.data.params["fold"]: r.data.metrics["gain_excluded"] for r in runs}["3"] == pytest.approx(gain)


@pytest.mark.slow
def test_sweep_on_two_node_cluster_uses_both_nodes(tiny_spec, tmp_path, own_ray):
    """Its own Ray on purpose: a head and a second node of one CPU each, one trial per node (last in this
    file, so that the shared Ray is restarted as seldom as possible)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        assert main(sweep_args(tiny_spec, tmp_path) + ["--address", cluster.address]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = [json.loads(line) for p in (tmp_path / TINY["name"]).glob("tune-*/*/result.json")
            for line in p.read_text().splitlines()]
    nodes = {r["node"] for r in rows if r.get("stage") == "done"}
    assert len(nodes) == 2
