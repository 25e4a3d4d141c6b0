"""The interface every corrector kind implements.

A kind is bound to one search's `SearchSetup` (the `correct` split, its CV splits, the config),
which lives here with the input helpers it uses, so the kinds need nothing of `corrector`. The search
in `corrector` does the rest the same way for every kind: it picks the taps, scores each candidate's
held-out probabilities with the tau scan (policy.best_choice), prunes, refits the winner on all of
`correct`, applies the policy on `test`, saves and reloads. What a kind provides:

    suggest(trial)          its own hyperparameters for one candidate (JSON-able)
    suggest_dims(trial)     the whitened principal components it sees, or None: the stacked taps
    cv(params, taps, dims)  per CV split: (valid rows, their probabilities, what that fit reports)
    finish(infos)           trial attributes derived from the splits' reports (xgboost: refit rounds)
    refit(X, names, attrs)  the winner (its trial attributes) fitted on all of `correct`: a Model
    load(workdir)           the saved Model

A kind's own spec keys are its `Settings` dataclass (under corrector.<name>), checked by `check`, and
reach it as `self.settings`. A Model has predict_proba(X) (columns in the classes' order), save(workdir),
which writes the kind's `model_file` as plain data (no pickles), and, if the kind can be exported,
to_onnx(source, target), its probabilities as ONNX nodes (see `onnxgraph`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import optuna

from correctsweep.config import CorrectorConfig, settings_of
from correctsweep.features import FeatureSet
from correctsweep.plugins import KINDS, Plugin
from correctsweep.projection import Projection

CVSplits = Iterator[tuple[np.ndarray, np.ndarray, dict]]
"""Per CV split: its valid rows, their probabilities (columns in the classes' order), what the fit reports."""


def stack_taps(fs: FeatureSet, taps) -> tuple[np.ndarray, list[str]]:
    """The chosen taps side by side, and a name per column ("fc.3")."""
    names = [f"{t}.{i}" for t in taps for i in range(fs.taps[t].shape[1])]
    return np.hstack([fs.taps[t] for t in taps]).astype(np.float32, copy=False), names


def fit_projection(fs: FeatureSet, taps, dims: int | None, seed: int) -> Projection | None:
    """The whitened basis of `dims` components fitted on `fs` (`correct`), or None: the plain taps."""
    return Projection.fit(stack_taps(fs, taps)[0], dims, seed) if dims else None


def corrector_inputs(fs: FeatureSet, taps, projection: Projection | None) -> tuple[np.ndarray, list[str]]:
    """What the corrector sees of `fs`: the stacked taps, or their projection."""
    X, names = stack_taps(fs, taps)
    return (projection.transform(X), projection.names()) if projection else (X, names)


@dataclass
class SearchSetup:
    """What every candidate of one search shares: the `correct` split, its CV splits and the allowed
    policies."""

    correct: FeatureSet
    y: np.ndarray
    """class indices 0..K-1 of correct.labels."""
    cv_splits: list[np.ndarray]
    """the rows held out by each CV split inside `correct`."""
    classes: list[int]
    excluded: int | None
    policies: list[str]
    taps: list[str]
    """the taps the search may choose among."""
    cfg: CorrectorConfig
    threads: int
    """the trial's CPUs."""

    def train_rows(self, valid: np.ndarray) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.y)), valid)

    def inputs(self, taps: tuple[str, ...], dims: int | None) -> tuple[np.ndarray, list[str]]:
        """`correct` as a candidate sees it: the stacked taps, or their projection (fitted on all of
        `correct`: the basis is unsupervised, so CV inside `correct` leaks no label)."""
        return corrector_inputs(self.correct, taps, fit_projection(self.correct, taps, dims, self.cfg.seed))


def positive_ints(value, allow_none: bool) -> bool:
    """Whether a dims setting is a positive integer, or a non-empty list of them (None allowed in it, or as it)."""
    values = value if isinstance(value, list) else [value]
    ok = lambda d: (d is None and allow_none) or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
    return bool(values) and all(ok(d) for d in values)


class Model(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, workdir: Path) -> None: ...


class Kind(Plugin, ABC):
    registry = KINDS
    model_file: ClassVar[str]
    """The file Model.save writes in the corrector's workdir (best copies it)."""

    def __init__(self, setup: SearchSetup):
        self.setup = setup
        self.settings = settings_of(setup.cfg, setup.cfg.kind)
        # parameters no candidate changes that belong to the machine (device, threads): stored with each
        # candidate, and replaced by this machine's when the winner is refit
        self.fixed: dict = {}

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> dict: ...

    @abstractmethod
    def suggest_dims(self, trial: optuna.Trial) -> int | None: ...

    @abstractmethod
    def cv(self, params: dict, taps: tuple[str, ...], dims: int | None) -> CVSplits: ...

    def finish(self, infos: list[dict]) -> dict:
        return {}

    @abstractmethod
    def refit(self, X: np.ndarray, names: list[str], attrs: dict) -> Model:
        """X: all of `correct` as the winner sees it (rows in setup.y's order)."""

    @classmethod
    @abstractmethod
    def load(cls, workdir: Path) -> Model: ...
