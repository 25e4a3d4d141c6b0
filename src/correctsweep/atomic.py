"""Atomic file writes: a reader (or a rerun after a kill) sees the old file or the new one, never half."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary files are hidden (pyarrow's datasets skip names starting with '.') and never end in the
# final suffix, so no '*.parquet' glob of an analyst or DuckDB reads a half-written file.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".tmp-", ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. The file
    gets the permissions the process's umask gives a new file (mkstemp alone would make it 0600, so
    colleagues on a shared filesystem could not read the run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_partials(folder: str | Path) -> int:
    """Delete what a killed writer left under `folder` (its temporary files and folders); returns how
    many. Only safe while no other process writes there, e.g. under the fold's lock."""
    removed = 0
    for p in sorted(Path(folder).rglob(f"{PARTIAL_PREFIX}*"), key=lambda p: -len(p.parts)):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _one_writer(path: Path) -> Iterator[None]:
    """Hold the lock of the folder `path` for writing it; a second writer waits for the first (a report
    or selection takes seconds), so that neither removes the other's temporary folder as stale."""
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another process is writing {path}: waiting for it to finish", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `path`; if the block succeeds it replaces `path` and all it held
    (a folder, or a file in its place), so a rerun leaves no stale file of an earlier one behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _one_writer(path):
        for pattern in (f"{PARTIAL_PREFIX}{path.name}-*", f"{PARTIAL_PREFIX}old-{path.name}-*"):
            for stale in path.parent.glob(pattern):
                _remove(stale)  # left by a writer that was killed: the lock says no other one is writing
        tmp = path.with_name(f"{PARTIAL_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()  # mkdir, not mkdtemp: the folder keeps the umask's permissions once renamed
        try:
            yield tmp
            old = path.with_name(f"{PARTIAL_PREFIX}old-{path.name}-{uuid.uuid4().hex[:8]}")
            if path.exists() or path.is_symlink():
                os.replace(path, old)  # a directory cannot replace a non-empty one: move it aside first
            os.replace(tmp, path)
            _remove(old)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
