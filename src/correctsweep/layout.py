"""The run directory's layout: every path of a run, built here and nowhere else.

    <storage>/<name>/
      spec.yaml                                       the spec every fold x seed ran under
      models/fold=J/seed=S/net-<net key>/             weights.pt, model.json, final_layer.npz
      features/fold=J/seed=S/split=X/part-<features key>.parquet   (Hive partitions: fold, seed, split)
      correctors/fold=J/seed=S/net-<net key>-corr-<corrector key>/   study.journal, model.ubj, ...
      predictions/fold=J/seed=S/split=X/part-<net key>.parquet    every method's h and score per image
      results/fold=J/seed=S.json                      the fold x seed's current result
      results/fold=J/seed=S.stopped/net-<net key>.json   a `search` sample the scheduler stopped (no result)
      report/, best/                                  written by collect and best
      tune-<spec key>/                                one Tune experiment per spec
      tune-<spec key>.state.json                      its state files and checksums (what a resume starts from)
      logs/                                           a sweep's per-trial logs and Ray's (ray.log)
      locks/                                          who runs a fold x seed x net, or the sweep
    <storage>/.cache/                                 decoded datasets (unless data.cache_dir is set)

`fold` is the excluded class (or `none`, the full model). Storage may be a local or shared path or a
URI (s3://, gs://, file://): with a URI every command works in a local mirror of the run, keyed by
the URI, and copies what it read and wrote with pyarrow's filesystems (`pull`, `push`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from correctsweep import reach
from correctsweep.atomic import open_lock, writing
from correctsweep.config import Spec
from correctsweep.errors import CorrectsweepError
from correctsweep.hashing import digest

# what pyarrow's filesystems read their credentials from, by URI scheme
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE; add ?endpoint_override=HOST to the URI "
          "for a store other than AWS)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run "
          "`gcloud auth application-default login`)",
    "hdfs": "HADOOP_HOME and CLASSPATH for libhdfs",
    "abfs": "AZURE_STORAGE_ACCOUNT_KEY (or AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET)",
}
CREDENTIALS["gcs"] = CREDENTIALS["gs"]


def is_uri(path: str) -> bool:
    return "://" in str(path)


def as_uri(path: str) -> str:
    return path if is_uri(path) else "file://" + str(Path(path).resolve())


def copy_tree(src: str, dst: str) -> None:
    """Copy a file or folder between two locations, either of which may be a URI. A missing source
    is not an error: a fold that has not run yet has nothing to pull."""
    src_fs, src_path = pafs.FileSystem.from_uri(as_uri(src))
    kind = src_fs.get_file_info(src_path).type
    if kind == pafs.FileType.NotFound:
        return
    dst_fs, dst_path = pafs.FileSystem.from_uri(as_uri(dst))
    # copy_files writes files only: it needs their folder to exist on the destination
    dst_fs.create_dir(dst_path if kind == pafs.FileType.Directory else dst_path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(as_uri(src), as_uri(dst))


def mirror_of(uri: str) -> Path:
    """This machine's working copy of a URI (keyed by it, so two runs of one name elsewhere never mix)."""
    return Path(tempfile.gettempdir()) / "correctsweep-runs" / digest(uri.rstrip("/"))


@dataclass(frozen=True)
class RunLayout:
    root: Path
    """Where this machine reads and writes the run: the run directory, or its local mirror."""
    remote: str | None = None
    """The run directory's URI when storage is one; None for a path."""

    @classmethod
    def of(cls, spec: Spec) -> RunLayout:
        if is_uri(spec.storage):
            return cls(mirror_of(spec.storage) / spec.name, spec.run_dir)
        return cls(Path(spec.storage) / spec.name)

    @classmethod
    def at(cls, run_dir: str | Path) -> RunLayout:
        """The layout of an existing RUN_DIR given on the command line (a path or a URI)."""
        run_dir = str(run_dir)
        if is_uri(run_dir):
            storage, name = run_dir.rstrip("/").rsplit("/", 1)
            return cls(mirror_of(storage) / name, f"{storage}/{name}")
        return cls(Path(run_dir))

    @staticmethod
    def cache_dir(spec: Spec) -> Path:
        """Decoded datasets: data.cache_dir, else <storage>/.cache (the mirror's, for a URI)."""
        if spec.data.cache_dir:
            return Path(spec.data.cache_dir)
        return (mirror_of(spec.storage) if is_uri(spec.storage) else Path(spec.storage)) / ".cache"

    def check_writable(self) -> None:
        """A one-line error, before anything is written, when the run directory cannot be reached,
        created or written (storage is a file, a folder without write permission, or a URI that does
        not answer with this machine's credentials)."""
        self.check_reachable()
        existing = self.root
        with writing(self.root):  # a name too long for the filesystem
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            what = "a file" if not existing.is_dir() else "not writable"
            raise CorrectsweepError(f"cannot write the run to {self.root}: {existing} is {what}; "
                                    "set storage to a folder you can write")
        self.check_no_links_out()

    def check_no_links_out(self) -> None:
        """A one-line error when a file or folder of the run directory is a symbolic link leading out of it:
        the tool writes only inside the run directory, and a planted link would make it write elsewhere."""
        root = self.root.resolve()
        for folder, dirs, files in os.walk(self.root):  # links to folders are listed, not followed
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink() and not _leads_into(path, root):
                    raise CorrectsweepError(f"{path} is a link to {os.readlink(path)}, outside the run directory, "
                                            "which the tool never writes through; remove the link (or copy what it "
                                            "points to into the run directory)")

    def check_reachable(self) -> None:
        """With URI storage, that the run directory's filesystem answers within reach.TIMEOUT_S."""
        if not self.remote:
            return
        code = ("import pyarrow.fs as f; fs, p = f.FileSystem.from_uri(%r); fs.get_file_info(p)" % self.remote)
        problem = reach.probe(code)
        if problem:
            scheme = self.remote.split("://", 1)[0]
            raise CorrectsweepError(f"cannot reach storage {self.remote} ({problem}); check the URI and set "
                                    f"{CREDENTIALS.get(scheme, 'the credentials its filesystem needs')}")

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def best_config(self) -> Path:
        """What `best` chose (see `best_config`)."""
        return self.best_dir / "best_config.yaml"

    def best_fold_dir(self, fold: str, seed: int) -> Path:
        """best/'s copies of a chosen fold x seed's net (net/) and corrector (corrector/)."""
        return self.best_dir / f"fold={fold}" / f"seed={seed}"

    @property
    def experiments(self) -> str:
        """Where Tune keeps its experiments: the run directory itself (Tune syncs URIs on its own)."""
        return self.remote or str(self.root)

    def model_dir(self, fold: str, seed: int, net_key: str) -> Path:
        return self.root / "models" / f"fold={fold}" / f"seed={seed}" / f"net-{net_key}"

    def features_file(self, fold: str, seed: int, split: str, features_key: str) -> Path:
        """One split's features, keyed by `trial.features_key` (the net's key, its taps and features.full)."""
        return self.root / "features" / f"fold={fold}" / f"seed={seed}" / f"split={split}" / \
            f"part-{features_key}.parquet"

    def features_files(self, fold: str, seed: int, split: str) -> list[Path]:
        """A fold x seed's features files of one split, one per features key it ran."""
        return sorted(self.features_file(fold, seed, split, "*").parent.glob("part-*.parquet"))

    def predictions_file(self, fold: str, seed: int, split: str, net_key: str) -> Path:
        """One split's per-image record of a fold x seed (see `predictions`), keyed by the net key."""
        return self.root / "predictions" / f"fold={fold}" / f"seed={seed}" / f"split={split}" / \
            f"part-{net_key}.parquet"

    def predictions_files(self, fold: str, seed: int, split: str) -> list[Path]:
        """A fold x seed's predictions files of one split, one per net it ran (`search` samples)."""
        return sorted(self.predictions_file(fold, seed, split, "*").parent.glob("part-*.parquet"))

    def corrector_dir(self, fold: str, seed: int, net_key: str, corrector_key: str) -> Path:
        return self.root / "correctors" / f"fold={fold}" / f"seed={seed}" / f"net-{net_key}-corr-{corrector_key}"

    def result_file(self, fold: str, seed: int, sample: str | None = None) -> Path:
        """The fold x seed's result, or with `sample` (a `search` sample's net) that sample's."""
        if sample:
            return self.root / "results" / f"fold={fold}" / f"seed={seed}.samples" / f"{sample}.json"
        return self.root / "results" / f"fold={fold}" / f"seed={seed}.json"

    def result_files(self, fold: str | None = None) -> list[Path]:
        """Every result (of `fold`, else of every fold): one per fold x seed, or one per `search` sample."""
        folds = f"fold={fold or '*'}"
        return sorted((self.root / "results").glob(f"{folds}/seed=*.json")) + \
            sorted((self.root / "results").glob(f"{folds}/seed=*.samples/*.json"))

    def stopped_file(self, fold: str, seed: int, net_key: str) -> Path:
        """The record of a `search` sample (its net) that the trial scheduler stopped before it had a result."""
        return self.root / "results" / f"fold={fold}" / f"seed={seed}.stopped" / f"net-{net_key}.json"

    def stopped_files(self) -> list[Path]:
        return sorted((self.root / "results").glob("fold=*/seed=*.stopped/net-*.json"))

    @contextmanager
    def lock(self, fold: str, seed: int, key: str) -> Iterator[None]:
        """One writer per fold, seed and net: a second process stops with a line naming the holder
        (two searches appending to one Optuna journal would mark each other's trials failed)."""
        with _hold(self.root / "locks" / f"fold={fold}-seed={seed}-net-{key}.lock",
                   f"fold {fold} seed {seed} of {self.root} is being run by {{holder}}; wait for it or stop it"):
            yield

    @contextmanager
    def sweep_lock(self) -> Iterator[None]:
        """One sweep per run directory at a time (on this machine, for URI storage): a second stops with
        a line naming the first, before it writes anything or starts Ray."""
        with _hold(self.root / "locks" / "sweep.lock",
                   f"a sweep of {self.root} is already running ({{holder}}); wait for it or stop it, "
                   "or pass --set name=NEW for a separate run"):
            yield

    @property
    def logs_dir(self) -> Path:
        """A sweep's logs: each trial's (trial_log) and Ray's own (ray.log)."""
        return self.root / "logs"

    def trial_log(self, fold: str, seed: int, trial_id: str) -> Path:
        return self.logs_dir / f"fold={fold}-seed={seed}-{trial_id}.log"

    def state_record(self, experiment: str) -> str:
        """Where a sweep records its Tune experiment's state files, with their checksums: beside it."""
        return f"{self.experiments}/{experiment}.state.json"

    def trial_command(self, fold: str, seed: int) -> str:
        """The command that reruns a fold x seed of this run from any folder: its spec and storage absolute (a
        run's spec.yaml may hold a storage relative to where it was first run)."""
        storage = self.remote.rsplit("/", 1)[0] if self.remote else self.root.resolve().parent
        return (f"correctsweep trial {self.spec_file.resolve()} --fold {fold} --seed {seed} "
                f"--set storage={storage}")

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def inside(self, recorded: str, what: str, base: Path | None = None) -> Path:
        """The path a record of the run names (`recorded`, relative to `base`, the run directory by default),
        once it is known to lead to a file or folder of the run: a record is data that may come from anyone,
        so an absolute path, a '..' or a link out of the run directory is refused in one line naming `what`."""
        path = (base or self.root) / recorded
        if Path(recorded).is_absolute() or "\0" in recorded or not _leads_into(path, self.root.resolve()):
            raise CorrectsweepError(f"{what} names {recorded!r}, which is not inside the run directory {self.root}; "
                                    "a run's records name its own files only: rerun the command that wrote it")
        return path

    def fold_parts(self, fold: str, seed: int) -> list[str]:
        """What one fold x seed owns in the run directory, relative to it."""
        return [f"{d}/fold={fold}/seed={seed}" for d in ("models", "features", "correctors", "predictions")] + \
            [f"results/fold={fold}/seed={seed}.json", f"results/fold={fold}/seed={seed}.samples",
             f"results/fold={fold}/seed={seed}.stopped"]

    def pull(self, parts: list[str]) -> None:
        """With URI storage, bring `parts` (relative paths) of the run into the local mirror."""
        for part in parts if self.remote else ():
            copy_tree(f"{self.remote}/{part}", str(self.root / part))

    def push(self, parts: list[str]) -> None:
        """With URI storage, copy `parts` of the local mirror back to the run directory."""
        for part in parts if self.remote else ():
            copy_tree(str(self.root / part), f"{self.remote}/{part}")


def _leads_into(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a loop of links
        return False


@contextmanager
def _hold(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` while the block runs, writing who holds it there; when another
    process holds it, a CorrectsweepError with `busy`, whose {holder} names that process."""
    with open(open_lock(path), "r+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise CorrectsweepError(busy.format(holder=fh.read().strip() or "another process")) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
