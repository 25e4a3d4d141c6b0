"""Shared test fixtures.

* `tiny_run`: one tiny finished run (a real sweep, collect and best through the CLI), built once per test
  session; `tiny_copy` copies it for a test that changes it. Its spec is `TINY`, the one place to edit.
* `shared_ray`: the test session's one local Ray, which `correctsweep sweep` reuses (and leaves running);
  `own_ray` shuts it down for a test that starts a Ray of its own on purpose.
* `RunBuilder` / `run_builder`: a run directory built by hand (K = 3, no training) for the collect and best
  tests.
"""
import dataclasses
import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from correctsweep import metrics
from correctsweep.atomic import write_json, write_text
from correctsweep.config import spec_from_dict
from correctsweep.corrector_journal import STUDY_NAME, study_storage
from correctsweep.corrector_store import CorrectorRecord, output_files
from correctsweep.hashing import sha256
from correctsweep.predictions import write as write_record
from correctsweep.results import ResultPaths, TrialResult

CLASSES = [1, 2, 3]
NAMES = ["Surprise", "Fear", "Disgust"]
Y = np.repeat(CLASSES, 4)  # 4 test images per class


def predictions(fold, corrected=0, full_misses=0):
    """f and h on Y. In fold j, f sends class j's images to the next class and h recovers the first
    `corrected` of them; in fold none, f calls the first `full_misses` images of class 1 class 2, h = f."""
    f = Y.copy()
    if fold == "none":
        f[:full_misses] = 2
        return f, f.copy()
    rows = np.flatnonzero(Y == int(fold))
    f[rows] = int(fold) % 3 + 1
    h = f.copy()
    h[rows[:corrected]] = int(fold)
    return f, h


def write_predictions(run_dir, fold, seed, pred_f, h, score, split="test"):
    """A fold x seed's predictions file of `split` on `Y`: `h` and `score` map each method (in column order)
    to its labels and novelty scores (None: no score, as in fold none); the path, relative to `run_dir`."""
    path = f"predictions/fold={fold}/seed={seed}/split={split}/part-k.parquet"
    write_record(run_dir / path, [f"img-{i}" for i in range(len(Y))], Y, pred_f, list(h), h,
                 {m: v for m, v in score.items() if v is not None})
    return path


def train_record(epochs, seed):
    """What train.train_base_net records: the loss falls each epoch, the validation accuracy peaks at the
    next-to-last epoch (the kept one)."""
    history = [{"epoch": e, "train_loss": 2.0 / e + 0.1 * seed, "val_accuracy": 0.4 + 0.05 * min(e, epochs - 1)
                - 0.03 * (e == epochs), "lr": 1e-3, "seconds": 1.0} for e in range(1, epochs + 1)]
    best = max(epochs - 1, 1)
    return {"best_epoch": best, "val_accuracy": history[best - 1]["val_accuracy"], "epochs_run": epochs,
            "seconds": float(epochs), "images_per_second": 100.0, "history": history}


class RunBuilder:
    def __init__(self, run_dir, folds, seeds):
        self.dir = run_dir
        spec = spec_from_dict({"name": run_dir.name, "storage": str(run_dir.parent), "folds": folds, "seeds": seeds})
        write_text(run_dir / "spec.yaml", spec.to_yaml())

    def add(self, fold, seed, corrected=0, full_misses=0, trials=((0.5, "override", ["fc"], 0.5),), epochs=0):
        """What trial.run_trial leaves for one fold x seed: the result, its search's journal with complete
        `trials` (cv score, policy, taps, tau), the test predictions and stand-in artifacts. With `epochs`,
        the result holds a training record of that many epochs whose next-to-last is the kept one."""
        pred_f, pred_h = predictions(fold, corrected, full_misses)
        paths = {"model": f"models/fold={fold}/seed={seed}/net-k", "corrector": f"correctors/fold={fold}/seed={seed}/c"}
        workdir = self.dir / paths["corrector"]
        workdir.mkdir(parents=True)
        study = optuna.create_study(study_name=STUDY_NAME, storage=study_storage(workdir), direction="maximize")
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # never a runner-up
        for value, policy, taps, tau in trials:
            study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
                "policy": policy, "taps": taps, "tau": tau, "params": {"eta": 0.1}, "n_rounds": 5}))
        best = study.best_trial
        pd.DataFrame({"split": "test", "label": Y, "pred_f": pred_f, "pred_h": pred_h}).to_parquet(
            workdir / "predictions.parquet")
        # g's probability of the excluded class: high on the images h moved to it
        score = None if fold == "none" else (pred_h != pred_f).astype(float)
        records = {"test": write_predictions(self.dir, fold, seed, pred_f, {"xgboost": pred_h}, {"xgboost": score}),
                   # a kind has no h or score on correct (see `predictions`)
                   "correct": write_predictions(self.dir, fold, seed, pred_f, {"xgboost": None}, {"xgboost": None},
                                                "correct")}
        for kind, name in (("model", "weights.pt"), ("corrector", "model.ubj")):
            write_text(self.dir / paths[kind] / name, f"{fold} {seed} {name}")
        write_json(self.dir / paths["model"] / "model.json",
                   {"weights_sha256": sha256(self.dir / paths["model"] / "weights.pt")})
        table = metrics.per_class(Y, pred_f, pred_h, CLASSES)
        record = CorrectorRecord(kind="xgboost", policy=best.user_attrs["policy"], tau=best.user_attrs["tau"],
                                 taps=best.user_attrs["taps"], pca_dims=None, params={"eta": 0.1}, n_rounds=5,
                                 cv_score=best.value, objective="balanced_accuracy", classes=CLASSES,
                                 certificate=None, search_seconds=1.5, seconds_per_candidate=0.5,
                                 n_candidates=len(trials), refit_seconds=0.1, sha256={name: sha256(workdir / name)
                                                            for name in output_files("xgboost", None)})
        write_json(workdir / "winner.json", dataclasses.asdict(record))
        result = TrialResult(
            fold=fold, seed=seed, excluded=None if fold == "none" else int(fold), classes=CLASSES,
            class_names=NAMES, net="paper", net_key="k", features_key="f", sweep_key="s",
            summary=metrics.summary(Y, pred_f, pred_h, CLASSES),
            per_class=table.reset_index().to_dict(orient="records"), corrector=record, methods={},
            paths=ResultPaths(model=paths["model"], corrector=paths["corrector"], predictions=records,
                              correctors={"xgboost": paths["corrector"]}),
            train=train_record(epochs, seed) if epochs else None, device={}, stage_seconds={}, frontier=[])
        write_json(self.dir / "results" / f"fold={fold}" / f"seed={seed}.json", result.to_dict())
        return self


@pytest.fixture
def run_builder(tmp_path):
    return lambda folds, seeds: RunBuilder(tmp_path / "run", folds, seeds)


# --- the tiny finished run ---------------------------------------------------------------------------------

KINDS = ["xgboost", "fisher", "logistic"]  # every corrector kind; xgboost is the published one
DETECTORS = ["msp", "energy", "mahalanobis", "knn", "she"]  # logits, a tap, and features with the final layer

# The tiny run's spec, complete (nothing from sweeps/), in today's keys. The smallest run that still goes
# through every stage: the synthetic faces (7 classes) at 24 px, one epoch, two candidates per corrector
# kind on 8 whitened components, one thread per trial (two trials side by side on a 2-core machine, and no
# thread oversubscription when other work shares the cores).
TINY = {
    "name": "tiny",
    "data": {"source": "synthetic", "synthetic": {"n_images": 500}, "image_size": 24},  # 500: the rarest class
    # fills every split
    "folds": [3, "none"],
    "seeds": [0],
    "base_net": {"epochs": 1, "patience": 1, "batch_size": 32, "threads": 1},
    "corrector": {"kind": "xgboost", "kinds": KINDS, "n_candidates": 2, "cv_splits": 2, "threads": 1,
                  "xgboost": {"max_rounds": 20, "pca_dims": 8}},
    "detectors": {"names": DETECTORS},
    "resources": {"cpus_per_trial": 1},
    "report": {"bootstrap": 200},
}


def sets(*items: str) -> list[str]:
    """`--set` arguments for each key=value item."""
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory) -> Path:
    """TINY as a spec file (its storage a scratch folder: give each command its own with --set storage=...)."""
    folder = tmp_path_factory.mktemp("tiny-spec")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY | {"storage": str(folder / "outputs")}, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def _ray_session():
    """Starts the local Ray when first asked (and again after an `own_ray` test); shuts it down at the end."""
    import ray

    def up():
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)

    yield up
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def shared_ray(_ray_session):
    """The test session's one local Ray: a sweep finds it initialised, runs on it and leaves it running."""
    _ray_session()


@pytest.fixture
def own_ray():
    """For a test that starts its own Ray on purpose (a cluster, an address): the shared one is shut down
    first, and the next test that asks for `shared_ray` starts it again."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under root and its SHA-256 (lock files aside: readers take them)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "locks" not in p.relative_to(root).parts and not p.name.endswith(".lock")}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_spec, _ray_session) -> Path:
    """The tiny finished run, made once per session with the real entry point: `correctsweep sweep` (Ray
    Tune; it collects and selects, so report/ and best/ are there too), tracked to MLflow when MLflow is
    installed. Read it only; copy it (`tiny_copy`) to change it: at the end of the session it must be
    byte for byte as built."""
    from correctsweep.cli import main

    _ray_session()
    storage = tmp_path_factory.mktemp("tiny-run")
    tracking = [f"tracking={{mlflow: 'sqlite:///{storage}/mlflow.db'}}"] if importlib.util.find_spec("mlflow") else []
    assert main(["sweep", str(tiny_spec), *sets(f"storage={storage}", *tracking)]) == 0
    run = storage / TINY["name"]
    built = fingerprint(storage)
    yield run
    changed = sorted(set(built.items()) ^ set(fingerprint(storage).items()))
    assert not changed, f"a test changed the shared tiny run (copy it with `tiny_copy`): {changed[:5]}"


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run (its whole storage, the decoded-data cache included) under tmp_path/storage,
    its spec.yaml's storage pointing at the copy and without `tracking` (a sweep of the copy logs nowhere:
    MLflow's store costs a sweep seconds, and the tracked run is the shared one's)."""
    storage = tmp_path / "storage"
    shutil.copytree(tiny_run.parent, storage, symlinks=True)
    run = storage / tiny_run.name
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["storage"] = str(storage)
    spec["tracking"] = {}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return run
