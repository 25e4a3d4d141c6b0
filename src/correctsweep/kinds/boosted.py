"""xgboost: gradient-boosted trees on the taps (the published corrector).

Design choices
* The search dominates a sweep's time, so each candidate is made cheap. The CV splits are quantised
  into QuantileDMatrix pairs (train, and valid with ref=train) once per tap subset and reused by
  every candidate asking for that subset; boosting stops early on the held-out fold's mlogloss (the
  search's MedianPruner then drops candidates that trail).
* Tap selection builds matrices per subset (lazily, a small LRU cache) rather than masking columns
  of one all-taps matrix: XGBoost cannot drop columns of a built matrix, `feature_weights` only bias
  column sampling (a zero weight is clamped to 1e-6, and ignored when colsample is 1), and
  `interaction_constraints` leave unlisted features usable (both checked on XGBoost 3.2). Building
  one split's matrices took 0.5 s for 5k rows x 1000 features on 2 threads, against ~0.35 s per
  boosting round, and a narrower matrix also trains faster.
* Bins: MAX_BIN = 64 rather than XGBoost's 256. With many features and small nodes, split search
  over the bins dominates a round: on 2.7k rows x 400 features x 7 classes (1 thread) a round took
  0.08 s against 0.24 s, for the same held-out log-loss (1.169 vs 1.168) and rounds (230 vs 228).
* The refit on all of `correct` boosts the CV splits' mean best rounds, scaled by k/(k-1): it sees
  that many times the rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import xgboost as xgb

from correctsweep.atomic import atomic_path
from correctsweep.errors import SpecError
from correctsweep.kinds.base import CVSplits, Kind, positive_ints
from correctsweep.onnxgraph import OPSET, OnnxNodes, node
from correctsweep.train import pick_device

CACHED_SUBSETS = 4  # tap subsets whose CV matrices are kept; each holds k (train, valid) pairs
MAX_BIN = 64  # histogram bins per feature, fixed because the matrices are quantised once (see above)


def _quantise(X, y, names, nthread, ref=None) -> xgb.QuantileDMatrix:
    """Binned features; with `ref`, binned on the reference's cut points (a valid or test part)."""
    return xgb.QuantileDMatrix(X, y, ref=ref, feature_names=names, max_bin=MAX_BIN, nthread=nthread)


@dataclass
class BoostedModel:
    booster: xgb.Booster

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(xgb.DMatrix(X, feature_names=self.booster.feature_names))

    def save(self, workdir: Path) -> None:
        with atomic_path(Path(workdir) / Boosted.model_file) as tmp:
            Path(tmp).write_bytes(self.booster.save_raw("ubj"))  # not save_model: it picks the format by suffix

    def to_onnx(self, source: str, target: str) -> OnnxNodes:
        """The trees as onnxmltools converts them: one TreeEnsembleClassifier, softmax included."""
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = self.booster.copy()
        booster.feature_names = None  # onnxmltools reads features as f0, f1, ... by position
        model = convert_xgboost(booster, initial_types=[("trees_in", FloatTensorType([None, booster.num_features()]))],
                                target_opset=OPSET)
        # its outputs (label, probabilities) renamed apart from g's own names
        renamed = {o.name: f"trees.{o.name}" for o in model.graph.output}
        for n in model.graph.node:
            n.output[:] = [renamed.get(name, name) for name in n.output]
        nodes = [node("Identity", [source], ["trees_in"]), *model.graph.node,
                 node("Identity", [renamed["probabilities"]], [target])]
        return OnnxNodes(nodes, list(model.graph.initializer), {o.domain: o.version for o in model.opset_import
                                                                 if o.domain})


@dataclass
class BoostedSettings:
    pca_dims: Any = None
    """Compact embeddings: project the chosen taps (standardised) onto this many whitened principal
    components fitted on `correct` only, before XGBoost sees them. null = full width; a list lets the search
    choose among its entries (null allowed), e.g. [null, 32, 64]."""
    max_rounds: int = 400
    """Upper bound on boosting rounds; early stopping picks the number actually used."""
    early_stopping_rounds: int = 20
    """Stop boosting after this many rounds without a better validation log-loss."""


class Boosted(Kind):
    name = "xgboost"
    model_file = "model.ubj"
    Settings = BoostedSettings

    @classmethod
    def check(cls, settings: BoostedSettings) -> None:
        if not positive_ints(settings.pca_dims, allow_none=True):
            raise SpecError("'corrector.xgboost.pca_dims' must be null, a positive integer or a list of them (null "
                            "allowed), e.g. [null, 64]")
        for key in ("max_rounds", "early_stopping_rounds"):
            if getattr(settings, key) < 1:
                raise SpecError(f"'corrector.xgboost.{key}' must be >= 1")

    def __init__(self, setup):
        super().__init__(setup)
        cfg = setup.cfg
        self.fixed = {"objective": "multi:softprob", "num_class": len(setup.classes), "tree_method": "hist",
                      "max_bin": MAX_BIN, "eval_metric": "mlogloss",
                      "device": pick_device(cfg.device, "corrector.device").type,
                      "nthread": cfg.threads or setup.threads, "seed": cfg.seed}
        # per (tap subset, pca dims): k (train, valid) matrix pairs, quantised once and reused
        self.matrices = functools.lru_cache(maxsize=CACHED_SUBSETS)(self._matrices)

    def suggest(self, trial: optuna.Trial) -> dict:
        return {
            "eta": trial.suggest_float("eta", 0.03, 0.3, log=True),  # slower ones run out of max_rounds
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
            "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
            "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
        }

    def suggest_dims(self, trial: optuna.Trial) -> int | None:
        dims = self.settings.pca_dims
        return trial.suggest_categorical("pca_dims", dims) if isinstance(dims, list) else dims

    def _matrices(self, taps: tuple[str, ...], dims: int | None) -> list:
        X, names = self.setup.inputs(taps, dims)
        out, nthread, y = [], self.fixed["nthread"], self.setup.y
        for valid in self.setup.cv_splits:
            train = self.setup.train_rows(valid)
            dtrain = _quantise(X[train], y[train], names, nthread)
            out.append((dtrain, _quantise(X[valid], y[valid], names, nthread, ref=dtrain), valid))
        return out

    def cv(self, params: dict, taps: tuple[str, ...], dims: int | None) -> CVSplits:
        settings = self.settings
        for dtrain, dvalid, valid in self.matrices(taps, dims):
            booster = xgb.train(params, dtrain, settings.max_rounds, evals=[(dvalid, "valid")],
                                early_stopping_rounds=settings.early_stopping_rounds, verbose_eval=False)
            rounds = booster.best_iteration + 1
            yield valid, booster.predict(dvalid, iteration_range=(0, rounds)), {"rounds": rounds}

    def finish(self, infos: list[dict]) -> dict:
        k, rounds = len(infos), np.mean([i["rounds"] for i in infos])
        return {"n_rounds": min(self.settings.max_rounds, max(1, int(round(rounds * k / (k - 1)))))}

    def refit(self, X: np.ndarray, names: list[str], attrs: dict) -> BoostedModel:
        params = attrs["params"]
        return BoostedModel(xgb.train(params, _quantise(X, self.setup.y, names, params["nthread"]), attrs["n_rounds"]))

    @classmethod
    def load(cls, workdir: Path) -> BoostedModel:
        return BoostedModel(xgb.Booster(model_file=str(Path(workdir) / cls.model_file)))
