"""A run directory built by hand (K = 3, no training) for the collect and best tests."""
import numpy as np
import optuna
import pandas as pd
import pytest

from correctsweep import metrics
from correctsweep.atomic import write_json, write_text
from correctsweep.config import spec_from_dict
from correctsweep.corrector import STUDY_NAME, sha256, study_storage
from correctsweep.predictions import write as write_record
from correctsweep.results import CorrectorRecord, ResultPaths, TrialResult

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
        pd.DataFrame({"label": Y, "pred_f": pred_f, "pred_h": pred_h}).to_parquet(workdir / "predictions.parquet")
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
        write_json(workdir / "best.json", {"kind": "xgboost", "pca_dims": None, "sha256": {
            name: sha256(workdir / name) for name in ("predictions.parquet", "model.ubj")}})
        table = metrics.per_class(Y, pred_f, pred_h, CLASSES)
        record = CorrectorRecord(kind="xgboost", policy=best.user_attrs["policy"], tau=best.user_attrs["tau"],
                                 taps=best.user_attrs["taps"], pca_dims=None, params={"eta": 0.1}, n_rounds=5,
                                 cv_score=best.value, search_seconds=1.5, refit_seconds=0.1,
                                 seconds_per_candidate=0.5, n_candidates=len(trials))
        result = TrialResult(
            fold=fold, seed=seed, excluded=None if fold == "none" else int(fold), classes=CLASSES,
            class_names=NAMES, net="paper", net_key="k", features_key="f", sweep_key="s",
            summary=metrics.summary(Y, pred_f, pred_h, CLASSES),
            per_class=table.reset_index().to_dict(orient="records"), corrector=record, methods={},
            paths=ResultPaths(model=paths["model"], corrector=paths["corrector"], predictions=records,
                              correctors={"xgboost": paths["corrector"]}),
            train=train_record(epochs, seed) if epochs else None, device={}, stage_seconds={})
        write_json(self.dir / "results" / f"fold={fold}" / f"seed={seed}.json", result.to_dict())
        return self


@pytest.fixture
def run_builder(tmp_path):
    return lambda folds, seeds: RunBuilder(tmp_path / "run", folds, seeds)
