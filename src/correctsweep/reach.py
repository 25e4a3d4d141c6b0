"""Bounded checks, run before any work, that remote storage and a tracking server answer, and a bound on
work in this process that could otherwise run without end.

Cloud clients retry for minutes when credentials are missing or a host does not answer (pyarrow's
GCS client looks for a metadata server for over two minutes), so each check runs in a child Python
that is abandoned after a timeout: the user gets one line naming the URI and what to set instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TIMEOUT_S = 15.0


def probe(code: str, timeout_s: float | None = None, env: dict[str, str] | None = None) -> str | None:
    """None when `code` runs to the end in a fresh Python within `timeout_s` (default TIMEOUT_S); else
    why not: its last line of error output, or that it did not answer in time."""
    timeout_s = timeout_s or TIMEOUT_S
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s,
                              env=os.environ | (env or {}))
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit code {done.returncode}")[:200]


@contextmanager
def bounded(seconds: float, error: Exception) -> Iterator[None]:
    """Raise `error` in the block once `seconds` have passed (Python code and its regular expressions check
    signals). Only the main thread can set a timer, so elsewhere the block runs unbounded: a caller does the
    same work in the main thread first (a sweep's check_folds before its trials' threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise error

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
