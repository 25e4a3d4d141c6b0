"""Hashes: the short digest that keys a stage's output, and the SHA-256 that verifies a file read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from correctsweep.errors import CorrectsweepError


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-able object: the key of a stage's cached output."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as the records that vouch for it store it."""
    return sha256_of(Path(path).read_bytes())


def sha256_of(data: bytes) -> str:
    """The SHA-256 of bytes already read (the bytes checked are then the bytes used)."""
    return hashlib.sha256(data).hexdigest()


def verified_bytes(path: Path, expected: str | None, recorded_in: str | Path) -> bytes:
    """The bytes of `path`, once their SHA-256 is `expected`, the checksum that `recorded_in` (the
    record's file) holds for it (None, a record without one, never matches); else a CorrectsweepError
    naming the file. The bytes returned are the bytes checked, so a caller that uses or publishes them
    never reads the file a second time."""
    path = Path(path)
    if not path.is_file():
        raise CorrectsweepError(f"{path} is missing")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorrectsweepError(f"{path} is unreadable ({e.strerror})") from None
    if sha256_of(data) != expected:
        raise CorrectsweepError(f"{path} does not match the checksum {recorded_in} recorded (cut short or replaced)")
    return data
