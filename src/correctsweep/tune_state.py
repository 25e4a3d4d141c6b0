"""The Tune experiment's state files, recorded by this tool and put back before a resume.

Resuming a Tune experiment unpickles its state files, which runs any code they hold. So after every
save the sweep records them beside the experiment with their SHA-256 (`StateRecord`), and a resume first
puts the recorded files back (`restore_state`): a kill between Tune's save and the record's, or a planted
file, changes nothing that is unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pyarrow.fs as pafs
from ray import tune

from correctsweep.atomic import atomic_path, write_json
from correctsweep.errors import CorrectsweepError
from correctsweep.layout import as_uri, is_uri

STATE_RECORD_EVERY_S = {"local": 0.0, "remote": 10.0}  # listing a bucket costs requests: not every step


def _state_files(experiment: str) -> dict[str, bytes]:
    """Every file of a Tune experiment that resuming it unpickles: its top-level state files (tuner.pkl,
    experiment_state-*.json, basic-variant-state-*.json) and the trials' error.pkl, by relative path."""
    fs, root = pafs.FileSystem.from_uri(as_uri(experiment))
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        rel = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and ("/" not in rel or rel.endswith("/error.pkl")):
            with fs.open_input_stream(info.path) as fh:
                out[rel] = fh.readall()
    return out


def _sha256(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


class StateRecord(tune.Callback):
    """Records the experiment's state files beside it after every step (Tune saves its state in a step
    before the step's callbacks run) and at the end, with their checksums: `restore_state` resumes from
    these, i.e. from a state this tool wrote, whatever a kill or a stranger left in the experiment."""

    def __init__(self, experiment: str, record: str):
        self.experiment, self.record = experiment, record
        self.written, self.at = None, 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.at >= STATE_RECORD_EVERY_S["remote" if is_uri(self.record) else "local"]:
            self.save()

    def on_experiment_end(self, trials, **info):
        self.save()

    def save(self) -> None:
        self.at = time.monotonic()
        files = _state_files(self.experiment)
        sha = _sha256(files)
        if files and sha != self.written:
            content = {rel: base64.b64encode(data).decode() for rel, data in files.items()}
            _write_record(self.record, {"sha256": sha, "content": content})
            self.written = sha


def _write_record(location: str, obj: dict) -> None:
    if not is_uri(location):
        write_json(location, obj)
        return
    fs, path = pafs.FileSystem.from_uri(location)
    with fs.open_output_stream(path) as fh:
        fh.write(json.dumps(obj, indent=2).encode())


def _read_record(record: str) -> dict[str, bytes]:
    """The state files a StateRecord saved, each checked against its recorded checksum."""
    fs, path = pafs.FileSystem.from_uri(as_uri(record))
    with fs.open_input_stream(path) as fh:
        raw = json.loads(fh.readall())
    files = {rel: base64.b64decode(text, validate=True) for rel, text in raw["content"].items()}
    if not files or _sha256(files) != raw["sha256"] or any(rel.startswith("/") or ".." in rel.split("/")
                                                           for rel in files):
        raise ValueError("its files do not match their checksums")
    return files


def restore_state(experiment: str, record: str) -> list[str]:
    """Put back the state files the last StateRecord saved, so that Tune resumes from them and unpickles
    nothing else: a file a kill left half-saved, or newer than the record, or planted, is set back to its
    recorded content or removed. Returns the files it set back; a one-line error when there is no
    readable record."""
    try:
        recorded = _read_record(record)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CorrectsweepError(f"not resuming {experiment}: it has no readable record of its state files ({record}), "
                                "so this tool cannot tell it wrote them, and resuming runs the code they hold; "
                                f"delete {experiment} to sweep this spec anew (its trials reuse the trained nets, "
                                "features and corrector searches), or pass --set name=NEW") from None
    current = _state_files(experiment)
    fs, root = pafs.FileSystem.from_uri(as_uri(experiment))
    changed = sorted(rel for rel in set(recorded) | set(current) if recorded.get(rel) != current.get(rel))
    for rel in changed:
        if rel in recorded:
            if is_uri(experiment):
                with fs.open_output_stream(f"{root}/{rel}") as fh:
                    fh.write(recorded[rel])
            else:
                with atomic_path(Path(experiment) / rel) as tmp:
                    Path(tmp).write_bytes(recorded[rel])
        else:
            fs.delete_file(f"{root}/{rel}")
    return changed


