"""A fold run, and a run applied, whatever f's data: images go through the net (`trial`, `predict`), a features
table's rows hold f's outputs and start at the corrector (`from_features`). The commands and the package's API
choose here, so neither pipeline imports the other: `from_features` builds on `trial` and `predict`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from correctsweep import from_features, predict, trial
from correctsweep.config import Spec
from correctsweep.plugins import SOURCES
from correctsweep.results import TrialResult


def run_trial(spec: Spec, fold: str, seed: int, log: Callable[[str], None] = print,
              progress: Callable[[dict], None] | None = None) -> TrialResult:
    """One fold x seed end to end (`trial.run_trial`), or from a features table (`from_features.run_table_trial`)."""
    if SOURCES.get(spec.data.source).holds_features:
        return from_features.run_table_trial(spec, fold, seed, log, progress)
    return trial.run_trial(spec, fold, seed, log, progress)


def load_corrected(path: str | Path, fold, seed: int | None = None, kind: str | None = None,
                   device: str = "auto") -> predict.CorrectedClassifier:
    """The corrected classifier h of `fold` in a run directory (RUN_DIR or RUN_DIR/best): best's choice, or
    fold x `seed`'s corrector of `kind`. Needs the run directory's spec.yaml, the net (none for a features
    table's run, whose h reads f's outputs from rows) and the corrector, not the data it was trained on."""
    selection = predict.locate(path, fold, seed, kind)
    made = predict.CorrectedClassifier if selection.net_dir is not None else from_features.TableClassifier
    return made(selection, predict.run_spec(selection.run_dir), device)
