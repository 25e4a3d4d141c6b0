"""The Optuna journal of a corrector search (study.journal in its workdir): where the study lives, and
what a kill or a damaged disk can do to it.

Optuna appends one JSON line per operation. A kill can leave the last line half-written, which Optuna
skips; a damaged disk or copy can break one in the middle, after which Optuna cannot read the journal
at all. The search cuts such a journal back to its whole records (`repair_journal`) and reruns what they
lacked; `best`, which only reads, names the damaged line (`damaged_record`).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

STUDY_NAME = "corrector"


def study_storage(workdir: Path) -> optuna.storages.JournalStorage:
    """The Optuna storage of the search in `workdir` (created on first use)."""
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(workdir) / "study.journal")))


def damaged_record(path: Path) -> int | None:
    """The line number of the first record of a journal that does not parse, when a whole record
    follows it (Optuna skips a torn last line, but stops with an error at one in the middle); else None."""
    lines = Path(path).read_bytes().splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError:
            return number if number < len(lines) or line.endswith(b"\n") else None
    return None


def repair_journal(path: Path) -> bool:
    """Cut a journal back to its last whole record before the first that does not parse; returns
    whether it had to. Every prefix of whole records is a state the study was in, so the search resumes
    from there and reruns the candidates whose records were cut."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    keep = 0
    for line in data.splitlines(keepends=True):
        try:
            json.loads(line)
        except ValueError:
            break
        if not line.endswith(b"\n"):
            break
        keep += len(line)
    if keep == len(data):
        return False
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    return True
