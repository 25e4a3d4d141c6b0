"""How the report names and orders what it shows: classes and folds by the dataset's class names ("1 Surprise",
"0 airplane"), folds in class order with the full model last."""

from __future__ import annotations

import numpy as np
import pandas as pd

from correctsweep.data import class_title
from correctsweep.results import TrialResult


def class_label(label, names: dict[int, str]) -> str:
    """'1 Surprise' for a class or a fold named by its excluded class; other labels ('none', 'full',
    'P') and classes without a name unchanged."""
    text = str(label)
    return class_title(int(text), names) if text.isascii() and text.isdigit() else text


def named(table: pd.DataFrame, names: dict[int, str]) -> pd.DataFrame:
    label = lambda x: class_label(x, names)
    return table.rename(index=label, columns=label)


def own_cells(table: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the cells (class j, fold j): the excluded class in its own fold."""
    return np.equal.outer(table.index.astype(str), table.columns.astype(str))


def fold_order(fold: str) -> tuple[bool, int]:
    """Sort key: excluded classes in numeric order, then the full model."""
    return fold == "none", 0 if fold == "none" else int(fold)


def result_order(result: TrialResult) -> tuple:
    return fold_order(result.fold), result.seed
