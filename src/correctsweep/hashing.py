"""Hashes: the short digest that keys a stage's output, and the SHA-256 that verifies a file read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-able object: the key of a stage's cached output."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as the records that vouch for it store it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
