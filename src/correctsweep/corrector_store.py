"""What a finished corrector search leaves in its workdir, and reading it back: the kind's model file,
the compact-embedding basis (projection.npz, when the winner saw one), the test predictions
(predictions.parquet) and, written last, winner.json: the `CorrectorRecord` of the chosen corrector.

winner.json is the record as JSON. Its presence says the other files are complete, and its checksums
(`CorrectorRecord.sha256`) that they are these: nothing is reused, reapplied or published before they
verify (`verified`). It is read back only as the dataclass (`read_record`), every field's type checked,
so a file that another version wrote, or that a kill or a disk damaged, is refused in one line naming
it; the search that wrote it, rerun by `correctsweep trial`, refits its winner and writes it anew.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from correctsweep.atomic import atomic_path, write_json
from correctsweep.certify import Certificate
from correctsweep.config import from_mapping
from correctsweep.errors import CorrectsweepError, SpecError
from correctsweep.features import FeatureSet
from correctsweep.hashing import sha256, verified_bytes
from correctsweep.kinds import Model, corrector_inputs
from correctsweep.plugins import KINDS
from correctsweep.policy import apply_policy
from correctsweep.projection import Projection

RECORD = "winner.json"
PREDICTIONS = "predictions.parquet"
PROJECTION = "projection.npz"


@dataclass
class CorrectorRecord:
    """The chosen corrector of one search: what winner.json holds, what a trial's result names as the fold's
    corrector (`TrialResult.corrector`), and what best, predict and export read."""

    kind: str
    policy: str
    tau: float
    taps: list[str]
    """The taps g reads, in the order it stacks them."""
    pca_dims: int | None
    """Whitened principal components the winner saw (projection.npz beside it), or None: full width."""
    params: dict
    """The winner's hyperparameters (xgboost: the booster's, with this machine's device and threads)."""
    n_rounds: int | None
    """xgboost: the refit's boosting rounds; None for the other kinds."""
    cv_score: float
    """The winner's `objective`, cross-validated inside `correct`."""
    objective: str
    classes: list[int]
    """g's classes, the columns of its probabilities in this order."""
    certificate: Certificate | None
    """tau's certified bound on Harm (corrector.max_harm), or None when uncertified."""
    search_seconds: float
    seconds_per_candidate: float
    n_candidates: int
    refit_seconds: float
    """Seconds to refit the winner on `correct` (its fit part when certified), certify and predict `test`."""
    sha256: dict[str, str]
    """Each output file's SHA-256 (`output_files`), by file name, taken when it was written."""


@dataclass
class CorrectorResult(CorrectorRecord):
    """The record and the chosen corrector's one evaluation on `test`, the per-image arrays that
    predictions.parquet holds and the record leaves out."""

    pred_h: np.ndarray
    proba: np.ndarray

    def record(self) -> CorrectorRecord:
        return CorrectorRecord(**{f.name: getattr(self, f.name) for f in fields(CorrectorRecord)})


def output_files(kind: str, pca_dims: int | None) -> list[str]:
    """The files a search writes beside winner.json, whose checksums winner.json records."""
    return [PREDICTIONS, KINDS.get(kind).model_file] + ([PROJECTION] if pca_dims else [])


def check_taps(taps: list[str] | None, sets: dict[str, FeatureSet]) -> list[str]:
    """The taps a corrector reads (None: all that the first set holds), each checked to be in every set
    (name -> its features)."""
    taps = list(next(iter(sets.values())).taps) if taps is None else list(taps)
    if not taps:
        raise CorrectsweepError("no taps to feed the corrector; list some in features.taps")
    for name, fs in sets.items():
        for t in taps:
            if t not in fs.taps:
                raise CorrectsweepError(f"tap '{t}' is not in the {name} features (they have "
                                        f"{', '.join(fs.taps)}); pick from those or add it to features.taps")
    return taps


def remove_outputs(workdir: Path, kind: str) -> None:
    """Remove a search's outputs (winner.json first: without it nothing else is read), files or not. The
    workdir is keyed by the kind's settings, so only its kind's files can be there."""
    for name in [RECORD, *output_files(kind, 1)]:
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def save(workdir: Path, result: CorrectorResult, model: Model, projection: Projection | None,
         predicted: dict[str, tuple[FeatureSet | None, np.ndarray | None]]) -> CorrectorResult:
    """Write the search's outputs, then winner.json; returns `result` with the checksums winner.json records.
    `predicted`: split (test, and calibration when certified) -> its features and g's probabilities on them,
    one table with a `split` column (the calibration rows are what a re-split of the guarantee needs)."""
    model.save(workdir)
    if projection:
        projection.save(workdir / PROJECTION)
    parts = []
    for split, (fs, proba) in predicted.items():
        if fs is None:
            continue
        h = result.pred_h if split == "test" else apply_policy(proba, fs.pred_f, result.classes, result.policy,
                                                                 result.tau, fs.meta.get("excluded"))
        columns = {"split": np.full(len(fs.labels), split), "sample_id": fs.sample_ids.astype(str),
                   "label": fs.labels, "pred_f": fs.pred_f, "pred_h": np.asarray(h).astype(np.int64)}
        columns |= {f"p_{c}": proba[:, i].astype(np.float32) for i, c in enumerate(result.classes)}
        parts.append(pa.table(columns))
    with atomic_path(workdir / PREDICTIONS) as tmp:
        pq.write_table(pa.concat_tables(parts), tmp)
    saved = replace(result, sha256={name: sha256(workdir / name)
                                    for name in output_files(result.kind, result.pca_dims)})
    write_json(workdir / RECORD, asdict(saved.record()))
    return saved


def read_record(workdir: Path) -> CorrectorRecord:
    """winner.json as the record, without verifying the files it names (`verified` does)."""
    path = Path(workdir) / RECORD
    if not path.is_file():
        raise CorrectsweepError(f"{path} is missing")
    try:
        return parse_record(path.read_bytes(), path)
    except OSError as e:
        raise CorrectsweepError(f"{path} is unreadable ({e.strerror})") from None


def parse_record(data: bytes, path: Path) -> CorrectorRecord:
    """The record that winner.json's bytes `data` (read from `path`) hold, or one line naming the file."""
    try:
        record = from_mapping(CorrectorRecord, json.loads(data), "record", finite=False)
        KINDS.get(record.kind, "kind")  # a kind this installation lacks: refused here, not at its first use
        return record
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; SpecError: an unknown key or kind, a wrong
    # type; TypeError: a missing field (winner.json of another version)
    except (ValueError, SpecError, TypeError) as e:
        raise CorrectsweepError(f"{path} is unreadable as this version's corrector record "
                                f"({str(e).splitlines()[0][:80]})") from None


def verified(workdir: Path, predictions: bool = True) -> CorrectorRecord:
    """The record of a finished search, once every output it names (the test predictions aside unless
    `predictions`) matches the checksum it recorded; else a CorrectsweepError naming the file that does not."""
    workdir = Path(workdir)
    record = read_record(workdir)
    for name in output_files(record.kind, record.pca_dims)[0 if predictions else 1:]:
        verified_bytes(workdir / name, record.sha256.get(name), workdir / RECORD)
    return record


def load_result(workdir: Path) -> CorrectorResult:
    """The result a finished search wrote into `workdir`, once its outputs verify."""
    record = verified(workdir)
    try:
        table = read_predictions(workdir, "test")
        return CorrectorResult(**vars(record), pred_h=table["pred_h"].to_numpy(),
                               proba=table[[f"p_{c}" for c in record.classes]].to_numpy())
    except (OSError, ValueError, KeyError) as e:
        raise CorrectsweepError(f"corrector output {workdir} does not read back ({str(e).splitlines()[0][:60]})"
                                ) from None


def read_predictions(workdir: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """g's rows of one split (test, or calibration when certified) in the search's predictions.parquet."""
    return pd.read_parquet(Path(workdir) / PREDICTIONS, columns=columns, filters=[("split", "==", split)])


def load_corrector(workdir: Path, record: CorrectorRecord) -> tuple[Model, Projection | None]:
    """g and the compact-embedding basis it saw, a load that fails being one line naming the folder."""
    try:
        model = KINDS.get(record.kind).load(workdir)
        projection = Projection.load(workdir / PROJECTION) if record.pca_dims else None
    except Exception as e:  # noqa: BLE001 -- xgboost, numpy and zipfile raise their own on a broken file
        raise CorrectsweepError(f"corrector {workdir} does not load ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:80] if str(e) else 'no detail'})") from None
    return model, projection


def predict_proba(workdir: Path, fs: FeatureSet) -> np.ndarray:
    """A saved corrector's class probabilities (columns in its classes' order) on any feature set with
    the taps it chose: the model and, when it saw compact embeddings, their basis, loaded once their
    checksums verify (the test predictions aside: best/ publishes a corrector without them)."""
    workdir = Path(workdir)
    record = verified(workdir, predictions=False)
    model, projection = load_corrector(workdir, record)
    return model.predict_proba(corrector_inputs(fs, check_taps(record.taps, {"given": fs}), projection)[0])
