"""The interface every corrector kind implements.

A kind is bound to one search's `corrector.SearchSetup` (the `correct` split, its CV splits, the
config). The search in `corrector` does the rest the same way for every kind: it picks the taps,
scores each candidate's out-of-fold probabilities with the tau scan (policy.best_choice), prunes,
refits the winner on all of `correct`, applies the policy on `test`, saves and reloads. What a kind
provides:

    suggest(trial)          its own hyperparameters for one candidate (JSON-able)
    suggest_dims(trial)     the whitened principal components it sees, or None: the stacked taps
    cv(params, taps, dims)  per CV split: (valid rows, their probabilities, what that fit reports)
    finish(infos)           trial attributes derived from the splits' reports (xgboost: refit rounds)
    refit(X, names, attrs)  the winner (its trial attributes) fitted on all of `correct`: a Model
    load(workdir)           the saved Model

A Model has predict_proba(X) (columns in the classes' order) and save(workdir), which writes the
kind's `model_file` as plain data (no pickles).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import optuna

if TYPE_CHECKING:
    from correctsweep.corrector import SearchSetup

CVSplits = Iterator[tuple[np.ndarray, np.ndarray, dict]]
"""Per CV split: its valid rows, their probabilities (columns in the classes' order), what the fit reports."""


class Model(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, workdir: Path) -> None: ...


class Kind(ABC):
    name: ClassVar[str]
    model_file: ClassVar[str]
    """The file Model.save writes in the corrector's workdir (best copies it)."""

    def __init__(self, setup: SearchSetup):
        self.setup = setup
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
