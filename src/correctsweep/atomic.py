"""Atomic file writes: a reader (or a rerun after a kill) sees the old file or the new one, never half.

Where the system refuses a write (no space, a file size limit, a protected file, a name too long, a file
where a folder belongs), the command ends with one line naming the path, what the system said and the fix,
the previous output intact and no temporary file left.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from correctsweep.errors import CorrectsweepError

# Temporary files are hidden (pyarrow's datasets skip names starting with '.') and never end in the
# final suffix, so no '*.parquet' glob of an analyst or DuckDB reads a half-written file.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".tmp-", ".partial"


_PROTECTED = "make it writable (its permissions, or chattr -i where it is immutable) or write elsewhere"
_WRONG_KIND = "it is the wrong kind (a file where a folder belongs, or the reverse): remove it, the tool recreates it"
FIXES = {errno.ENOSPC: "free space on that filesystem or write elsewhere",
         errno.EDQUOT: "free space in your disk quota or write elsewhere",
         errno.EFBIG: "the file size limit is too small (ulimit -f, or the filesystem's): raise it or write elsewhere",
         errno.ENAMETOOLONG: "use a shorter path (storage, name or --out)",
         errno.EPERM: _PROTECTED, errno.EACCES: _PROTECTED, errno.EROFS: "the filesystem is read-only: write elsewhere",
         errno.ELOOP: "it is a symbolic link, which the tool never writes through: remove the link",
         errno.EISDIR: _WRONG_KIND, errno.ENOTDIR: _WRONG_KIND, errno.EEXIST: _WRONG_KIND}
"""The errors of a write the user can fix, by errno, and how."""


def _errno(e: OSError) -> int | None:
    """`e`'s errno if it is one of FIXES (pyarrow's and torch's errors carry the text only)."""
    if e.errno in FIXES:
        return e.errno
    return next((n for n in FIXES if e.errno is None and os.strerror(n) in str(e)), None)


def write_error(e: OSError, path: str | Path) -> CorrectsweepError | None:
    """The one line for a write of `path` the system refused with `e`, or None for an error of another kind."""
    number = _errno(e)
    if number is None:
        return None
    at = Path(e.filename) if isinstance(e.filename, str) else Path(path)
    if any(part.startswith(PARTIAL_PREFIX) for part in at.parts):  # the user knows the path, not our temporary one
        at = Path(path)
    if FIXES[number] is _WRONG_KIND:  # name the file or folder of the wrong kind, not the path beneath it
        at = next((p for p in (at, *at.parents) if p.is_file() or p.is_dir() and p == at), at)
    return CorrectsweepError(f"cannot write {at}: {os.strerror(number)}; {FIXES[number]}")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Within: an OSError of FIXES while writing `path` is its one line (write_error)."""
    try:
        yield
    except OSError as e:
        error = write_error(e, path)
        if error is None:
            raise
        raise error from None


def ensure_folder(path: str | Path) -> Path:
    """`path` as a folder, created with its parents where missing."""
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def open_lock(path: str | Path) -> int:
    """A lock file's descriptor, opened for reading and writing, created if missing, never through a link
    (a lock file planted as a link would make its holder overwrite what it points to)."""
    path = Path(path)
    ensure_folder(path.parent)
    with writing(path):
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. The file
    gets the permissions the process's umask gives a new file (mkstemp alone would make it 0600, so
    colleagues on a shared filesystem could not read the run)."""
    path = ensure_folder(Path(path).parent) / Path(path).name
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    os.close(fd)
    try:
        with writing(path):
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
    with open(open_lock(path.with_name(f".{path.name}.lock"))) as fh:
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
    path = ensure_folder(Path(path).parent) / Path(path).name
    with _one_writer(path):
        for pattern in (f"{PARTIAL_PREFIX}{path.name}-*", f"{PARTIAL_PREFIX}old-{path.name}-*"):
            for stale in path.parent.glob(pattern):
                _remove(stale)  # left by a writer that was killed: the lock says no other one is writing
        tmp = path.with_name(f"{PARTIAL_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            with writing(path):
                tmp.mkdir()  # mkdir, not mkdtemp: the folder keeps the umask's permissions once renamed
                yield tmp
                _swap(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


_FS_IOC_GETFLAGS, _IMMUTABLE_OR_APPEND = 0x80086601, 0x10 | 0x20  # linux/fs.h: FS_IMMUTABLE_FL, FS_APPEND_FL


def _undeletable(path: Path) -> Path | None:
    """The first file or folder of `path` that could not be deleted: immutable or append-only (chattr +i, +a,
    as Linux reports them), or inside a folder this process may not write; None where every one can be."""
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        if p.is_dir() and not p.is_symlink() and not os.access(p, os.W_OK | os.X_OK):
            return p
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # a link, a socket: its flags do not matter to deleting it
            continue
        try:
            flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        except OSError:  # a filesystem without such flags (tmpfs, NFS)
            flags = 0
        finally:
            os.close(fd)
        if flags & _IMMUTABLE_OR_APPEND:
            return p
    return None


def _swap(tmp: Path, path: Path) -> None:
    """`tmp` in the place of `path`: the old `path` is moved aside first (a directory cannot replace a non-empty
    one) and back if the new one cannot take its place, then removed. An old `path` that could not be removed
    whole is refused before anything moves."""
    blocked = _undeletable(path) if path.exists() else None
    if blocked is not None:
        raise CorrectsweepError(f"cannot replace {path}: {blocked} cannot be deleted (immutable or append-only, "
                                "or in a folder you may not write); chattr -i (or -a) or chmod it, then rerun")
    old = path.with_name(f"{PARTIAL_PREFIX}old-{path.name}-{uuid.uuid4().hex[:8]}")
    moved = path.exists() or path.is_symlink()
    if moved:
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if moved:
            os.replace(old, path)
        raise
    if not moved:
        return
    try:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    except OSError as e:
        raise CorrectsweepError(f"{path} is written, but its previous version {old} cannot be removed "
                                f"({e.filename}: {e.strerror}); {FIXES.get(_errno(e), 'see why')}, then delete {old}") \
            from None
