"""The per-image record of a fold x seed, predictions/fold=J/seed=S/split=X/part-<net key>.parquet (see
`layout`): every figure of collect's report comes from these files and nothing else of a trial's, so
anyone can recompute one with pandas, pyarrow or DuckDB and no project code:

    select * from read_parquet('RUN_DIR/predictions/**/*.parquet', hive_partitioning=1)

Columns: sample_id, label (true), pred_f (the base net's prediction), then for every corrector kind and
detector of the spec (corrector.all_kinds, then detectors.names) `h_<method>`, its h, and `score_<method>`, its
novelty score for the excluded class (higher: more likely that class): for a kind, its model g's
probability of the class (`CorrectorResult.proba`), for a detector its score. Every file of a run has
every column, null where a method has none, so the glob above reads without union_by_name:
- fold none: no score (there is no excluded class) and no detector (they need one);
- split correct: the detectors' h and score at the threshold chosen there, but no kind's. A kind's
  probabilities on `correct` are either held out, which its search keeps only while it scores a
  candidate, or the refit's own in-sample ones, which flatter it; no figure reads them.

With `search`, each sampled net of a fold x seed writes its own file (the result names the one it read);
a trial without `search` removes files of earlier nets in its folders, as its result replaces theirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from correctsweep.atomic import atomic_path
from correctsweep.errors import CorrectsweepError


def write(path: Path, sample_ids, labels, pred_f, methods: list[str], h: dict[str, np.ndarray],
          score: dict[str, np.ndarray]) -> None:
    """One split's record, atomically: `methods` every method of the run, `h` and `score` those this split
    has (by method)."""
    n = len(labels)
    column = lambda values, kind: pa.nulls(n, kind) if values is None else pa.array(np.asarray(values), kind)
    columns = {"sample_id": pa.array(np.asarray(sample_ids).astype(str)), "label": column(labels, pa.int64()),
               "pred_f": column(pred_f, pa.int64())}
    for m in methods:
        columns[f"h_{m}"] = column(h.get(m), pa.int64())
        columns[f"score_{m}"] = column(score.get(m), pa.float64())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def remove_others(path: Path) -> None:
    """Delete the other nets' files beside `path` (results of earlier nets that this trial replaces)."""
    for other in Path(path).parent.glob("part-*.parquet"):
        if other.name != Path(path).name:
            other.unlink()


def read(path: Path, where: str) -> pd.DataFrame:
    """The predictions file a result names; a one-line error naming `where` (the result) when it is gone."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise CorrectsweepError(f"{where} names the predictions file {path}, which is unreadable ({str(e)[:60]}); "
                                "rerun `correctsweep trial SPEC --fold J --seed S` for it (its cached stages "
                                "make that quick)") from None
