"""Where a command may write its output: predict's --out and export's --onnx never replace a file or folder
of the run directory, nor one of the user's that the tool did not write (unless told to, `--force`)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from correctsweep.errors import CorrectsweepError

OWN_FILES = {"f.onnx", "g.onnx", "manifest.json"}


def check_folder(folder: Path, run_dir: Path) -> Path:
    """`folder`, resolved, if the export may take its place: a new or empty folder, or one holding an earlier
    export and nothing else; never the run directory, a folder inside it, or a folder of the user's files."""
    given, folder = folder, Path(folder).resolve()
    if not folder.parent.is_dir():
        raise CorrectsweepError(f"--onnx {given}: folder {folder.parent} does not exist; create it first")
    run = Path(run_dir).resolve()
    if folder.is_relative_to(run) or run.is_relative_to(folder):
        raise CorrectsweepError(f"--onnx {given} is the run directory {run}, a folder inside it or one holding it; "
                                "give a new folder outside the run")
    if folder.exists() and not folder.is_dir():
        raise CorrectsweepError(f"--onnx {given} is a file; give a new folder")
    held = set(os.listdir(folder)) if folder.is_dir() else set()
    if held and not (held <= OWN_FILES and "manifest.json" in held):
        raise CorrectsweepError(f"--onnx {given} holds files that are not an export of this tool "
                                f"({', '.join(sorted(held - OWN_FILES)[:3]) or 'no manifest.json'}), which writing the "
                                "export would delete; give a new or empty folder")
    return folder


def _written_here(path: Path, columns: list[str]) -> bool:
    """Whether `path` is a table predict wrote: its columns are `columns` (with `label` or without)."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8") as fh:
                found = [c.strip('"') for c in fh.readline().strip().split(",")]
        else:
            found = pq.read_schema(path).names
    except (OSError, ValueError):  # not text, not Parquet
        return False
    return [c for c in found if c != "label"] == columns


def check_out(out: Path, run_dir: Path, force: bool, columns: list[str]) -> None:
    """A one-line error unless predict may write `out`: outside the run directory (whose files are the run's
    own), not a folder, and new, predict's own earlier table (of `columns`), or replaced on purpose (`force`)."""
    if not out.parent.is_dir():
        raise CorrectsweepError(f"--out {out}: folder {out.parent} does not exist; create it or write elsewhere")
    if out.resolve().is_relative_to(Path(run_dir).resolve()):
        raise CorrectsweepError(f"--out {out} is inside the run directory {run_dir}, whose files are the run's own; "
                                "write the predictions elsewhere")
    if out.is_dir():
        raise CorrectsweepError(f"--out {out} is a folder; give a file name, e.g. {out / 'predictions.parquet'}")
    if out.exists() and not force and not _written_here(out, columns):
        raise CorrectsweepError(f"--out {out} exists and is not a predictions table this tool wrote; pass --force "
                                "to replace it, or write elsewhere")
