"""The drill, continued: a run directory's own files, spec edge cases, interrupts and concurrency,
remote storage and tracking, and Tune state planted in a run. Each bad case gets one line naming the
thing, a non-zero exit, and leaves every file as it was (nothing half-written, nothing published); each
recoverable case succeeds and recomputes what did not verify."""
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from correctsweep import atomic, cli, console, reach, sweep, tracking, tune_state
from correctsweep.config import load_spec
from correctsweep.hashing import digest
from correctsweep.layout import RunLayout, mirror_of

SMOKE = "sweeps/smoke.yaml"
FOLD = "fold=3/seed=0"


# --- the tiny run (conftest), copied into each test's folder -------------------------------------------

@pytest.fixture
def run(tiny_copy):
    """A copy of the finished tiny run, its spec.yaml's storage pointing at the copy."""
    shutil.rmtree(tiny_copy / "locks")
    return tiny_copy


def one(run, pattern):
    (path,) = run.glob(pattern)
    return path


def corrector_file(run, name):
    """A file of fold 3's published corrector (the run has one search per corrector kind)."""
    result = json.loads((run / "results" / "fold=3" / "seed=0.json").read_text())
    return run / result["paths"]["corrector"] / name


def net_file(run, name):
    return one(run, f"models/{FOLD}/*/{name}")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def to_folder(path):
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


def garbage_mid_journal(path):
    lines = path.read_bytes().splitlines(keepends=True)
    lines[len(lines) // 2] = b'{"op_code": 4, "worker_id": "\x01garbage\n'
    path.write_bytes(b"".join(lines))


def fitted_on_another_net(run):
    """The taps the fold's correctors were fitted on, recorded as another net's (as if its net were swapped)."""
    import pyarrow.parquet as pq

    path = one(run, f"features/{FOLD}/split=correct/part-*.parquet")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"correctsweep"]) | {"weights_sha256": "0" * 64}
    pq.write_table(table.replace_schema_metadata({b"correctsweep": json.dumps(meta).encode()}), path)


def drop_checksums(path):
    best = json.loads(path.read_text())
    del best["sha256"]
    path.write_text(json.dumps(best))


def snapshot(root):
    """Every file and folder under root with its content hash (lock files and the decoded-data cache
    aside: they are bookkeeping, not results)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if ".cache" in rel.parts or "locks" in rel.parts or p.name.endswith(".lock"):
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def refused(tmp_path, capsys, argv, expect, root=None):
    root = root or tmp_path
    before = snapshot(root)
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("correctsweep: error:"), err
    assert expect in err, err
    assert snapshot(root) == before, "a refused command changed the run directory"
    assert not list(root.rglob(".tmp-*")), "a temporary file was left behind"
    return err


# --- family 1: the run directory's own files -----------------------------------------------------------

def best(change):
    return lambda run: (change(run), ["best", str(run)])[1]


def collect(change):
    return lambda run: (change(run), ["collect", str(run)])[1]


def spec_text(text):
    return lambda run: (run / "spec.yaml").write_text(text)


FILE_CASES = [
    ("xgboost model truncated", best(lambda r: truncate(corrector_file(r, "model.ubj"))), "model.ubj does not match"),
    ("xgboost model corrupt", best(lambda r: flip(corrector_file(r, "model.ubj"))), "model.ubj does not match"),
    ("xgboost model missing", best(lambda r: corrector_file(r, "model.ubj").unlink()), "model.ubj is missing"),
    ("xgboost model a folder", best(lambda r: to_folder(corrector_file(r, "model.ubj"))), "model.ubj is missing"),
    ("predictions truncated", best(lambda r: truncate(corrector_file(r, "predictions.parquet"))),
     "predictions.parquet does not match"),
    ("predictions missing", best(lambda r: corrector_file(r, "predictions.parquet").unlink()),
     "predictions.parquet is missing"),
    ("predictions a folder", best(lambda r: to_folder(corrector_file(r, "predictions.parquet"))),
     "predictions.parquet is missing"),
    ("winner.json truncated", best(lambda r: truncate(corrector_file(r, "winner.json"))), "winner.json is unreadable"),
    ("winner.json missing", best(lambda r: corrector_file(r, "winner.json").unlink()), "winner.json is missing"),
    ("winner.json a folder", best(lambda r: to_folder(corrector_file(r, "winner.json"))), "winner.json is missing"),
    ("winner.json without checksums", best(lambda r: drop_checksums(corrector_file(r, "winner.json"))),
     "winner.json is unreadable as this version's corrector record"),
    ("winner.json a list", best(lambda r: corrector_file(r, "winner.json").write_text("[1, 2]")),
     "winner.json is unreadable"),
    ("net weights corrupt", best(lambda r: flip(net_file(r, "weights.pt"))), "weights.pt does not match"),
    ("net weights missing", best(lambda r: net_file(r, "weights.pt").unlink()), "weights.pt is missing"),
    ("net model.json corrupt", best(lambda r: truncate(net_file(r, "model.json"))), "is unreadable"),
    ("journal damaged in the middle", best(lambda r: garbage_mid_journal(corrector_file(r, "study.journal"))),
     "is damaged at line"),
    ("journal missing", best(lambda r: corrector_file(r, "study.journal").unlink()), "study.journal is missing"),
    ("journal a folder", best(lambda r: to_folder(corrector_file(r, "study.journal"))), "study.journal is missing"),
    ("corrector folder gone", best(lambda r: shutil.rmtree(corrector_file(r, "winner.json").parent)),
     "study.journal is missing"),
    ("run spec empty", collect(spec_text("")), "rerun one trial"),
    ("run spec a list", collect(spec_text("- name: smoke\n")), "must be a mapping"),
    ("run spec a number", best(spec_text("42\n")), "must be a mapping"),
    ("run spec partial", best(spec_text("name: smoke\nstorage: outputs\n")), "lacks data, folds"),
    ("run spec invalid YAML", collect(spec_text("name: [smoke\n")), "is not valid YAML"),
    ("run spec bad value", collect(spec_text(load_spec(SMOKE).to_yaml().replace("epochs: 2", "epochs: x"))),
     "base_net.epochs"),
    ("run spec binary", collect(lambda r: (r / "spec.yaml").write_bytes(b"\xff\xfe\x00\x81" * 20)), "is not text"),
    ("run spec a folder", collect(lambda r: to_folder(r / "spec.yaml")), "no spec.yaml"),
    ("best's net not the one its corrector was fitted on", lambda r: (best_choice(
        lambda c: c.update(net_sha256="0" * 64))(r), PREDICT(r))[1], "not the net fold 3's corrector was fitted on"),
    ("a trial's corrector fitted on another net", lambda r: (fitted_on_another_net(r), PREDICT_SEED(r))[1],
     "not the net fold 3's corrector was fitted on"),
    ("data added since the run", lambda r: (edit_spec(lambda s: s["data"]["synthetic"].update(n_images=560))(r, None),
                                            PREDICT(r))[1], "is not what the run split"),
]


@pytest.mark.parametrize("name, argv, expect", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_run_file_is_one_line_and_publishes_nothing(run, tmp_path, capsys, name, argv, expect):
    args = argv(run)
    err = refused(tmp_path, capsys, args, expect)
    if "fold 3 seed 0:" in err:  # a fold's file: the fix names the trial to rerun, checked below to work
        assert f"correctsweep trial {run / 'spec.yaml'} --fold 3 --seed 0 --set storage={run.parent}" in err


RECOVER_CASES = [
    ("model truncated", lambda r: truncate(corrector_file(r, "model.ubj")), "refitting"),
    ("model a folder", lambda r: to_folder(corrector_file(r, "model.ubj")), "refitting"),
    ("winner.json without checksums", lambda r: drop_checksums(corrector_file(r, "winner.json")), "refitting"),
    ("journal damaged in the middle", lambda r: garbage_mid_journal(corrector_file(r, "study.journal")),
     "cut it back"),
]


@pytest.mark.parametrize("name, damage, says", RECOVER_CASES, ids=[c[0] for c in RECOVER_CASES])
def test_the_advised_trial_rerun_recomputes_and_best_then_publishes(run, capsys, monkeypatch, name, damage, says):
    """The advice, run as printed from another folder, recomputes into the run (its spec.yaml's storage relative)."""
    damage(run)
    edit_spec(lambda spec: spec.update(storage="x"))(run, None)
    (run.parent.parent / "elsewhere").mkdir()
    monkeypatch.chdir(run.parent.parent / "elsewhere")
    assert cli.main(["best", str(run)]) == 2
    advised = re.search(r"rerun `correctsweep (trial [^`]+)`", capsys.readouterr().err).group(1)
    assert cli.main(advised.split()) == 0
    assert not list((run.parent.parent / "elsewhere").iterdir())
    assert says in capsys.readouterr().out
    assert cli.main(["best", str(run)]) == 0
    published = one(run, f"best/{FOLD}/corrector/model.ubj").read_bytes()
    assert published == corrector_file(run, "model.ubj").read_bytes()
    assert json.loads(corrector_file(run, "winner.json").read_text())["sha256"]["model.ubj"] == \
        hashlib.sha256(published).hexdigest()


# --- family 3: spec edge cases ---------------------------------------------------------------------------

def spec_file(text=None, data=None):
    def make(tmp):
        path = tmp / "spec.yaml"
        path.write_bytes(data if data is not None else text.encode())
        return ["trial", str(path), "--fold", "3", "--set", f"storage={tmp}/out"]
    return make


def sets(*pairs):
    return lambda tmp: ["trial", SMOKE, "--fold", "3", "--set", f"storage={tmp}/out",
                        *[a for p in pairs for a in ("--set", p)]]


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi"))
SPEC_CASES = [
    ("lr infinite", sets("base_net.lr=.inf"), "'base_net.lr' must be a finite number"),
    ("dropout nan", sets("base_net.paper.dropout=.nan"), "'base_net.paper.dropout' must be a finite number"),
    ("lr minus infinity", sets("base_net.lr=-.inf"), "'base_net.lr' must be a finite number"),
    ("timeout overflowing to inf", sets("corrector.timeout_s=1e400"), "'corrector.timeout_s' must be a finite"),
    ("lr the text inf", sets("base_net.lr='inf'"), "'base_net.lr' must be a number"),
    ("epochs 10**30", sets(f"base_net.epochs={10**30}"), "'base_net.epochs' must be at most"),
    ("seed 10**30", sets(f"seeds=[{10**30}]"), "'seeds' must be at most"),
    ("seed negative", sets("seeds=[-1]"), "'seeds' must be between 0 and 4294967295"),
    ("seed 2**32", sets(f"seeds=[{2**32}]"), "'seeds' must be at most"),
    ("corrector seed negative", sets("corrector.seed=-1"), "'corrector.seed' must be between"),
    ("seed twice", sets("seeds=[0, 0]"), "'seeds' must be distinct"),
    ("epochs a fraction", sets("base_net.epochs=2.5"), "'base_net.epochs' must be an integer"),
    ("free-form value infinite", sets("corrector.xgboost.pca_dims=[.inf]"),
     "'corrector.xgboost.pca_dims' must be a finite"),
    ("folds nan", sets("folds=[.nan]"), "'folds' must be a finite number"),
    ("list for a section", sets("data=[1, 2]"), "'data' must be a mapping"),
    ("list for tracking", sets("tracking=[mlflow]"), "'tracking' must be a mapping"),
    ("list for search", sets("search=[base_net.lr]"), "'search' must be a mapping"),
    ("mapping for seeds", sets("seeds={a: 1}"), "'seeds' must be a list"),
    ("--set value not YAML", sets("data=["), "--set data=[: the value is not valid YAML"),
    ("--set value unclosed quote", sets("name='smoke"), "is not valid YAML"),
    ("name of 300 characters", sets("name=" + "n" * 300), "at most 100"),
    ("name a number", sets("name=007"), "'name' must be text"),
    ("tracking URI a number", sets("tracking={mlflow: 5}"), "'tracking.mlflow' must be text"),
    ("top key twice", spec_file("name: a\nseeds: [0]\nname: b\n"), "key 'name' is given twice (line 3)"),
    ("nested key twice", spec_file("data:\n  image_size: 32\n  image_size: 48\n"), "key 'image_size' is given twice"),
    ("alias bomb", spec_file(BOMB), "more than 10000 values"),
    ("alias of itself", spec_file("name: &a [*a]\n"), "more than 10000 values"),
    ("huge spec file", spec_file("#" * (1 << 20) + "\nname: x\n"), "more than a spec needs"),
    ("nested too deeply", spec_file("a: " + "[" * 5000 + "]" * 5000 + "\n"), "not valid YAML"),
    ("cpus per trial beyond the machine", lambda tmp: ["sweep", SMOKE, "--set", f"storage={tmp}/out", "--set",
                                                       "resources.cpus_per_trial=4096"], "no trial could start"),
    ("storage name too long", lambda tmp: ["trial", SMOKE, "--fold", "3", "--set", f"storage={tmp}/{'s' * 300}"],
     "File name too long; use a shorter path"),
]


@pytest.mark.parametrize("name, argv, expect", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_bad_spec_value_is_one_line(tmp_path, capsys, name, argv, expect):
    refused(tmp_path, capsys, argv(tmp_path), expect)


@pytest.mark.parametrize("text, overrides, check", [
    ("name: 2024-01-01\n", [], lambda s: s.name == "2024-01-01"),
    ("name: x\n", ["name=2024-01-01"], lambda s: s.name == "2024-01-01"),
    ("base_net: &b {epochs: 3, patience: 2}\n", ["seeds=[0, 4294967295]"],
     lambda s: s.base_net.epochs == 3 and s.seeds == [0, 4294967295]),
    ("corrector: {n_candidates: '12', timeout_s: 5e-1}\n", [],
     lambda s: s.corrector.n_candidates == 12 and s.corrector.timeout_s == 0.5),
    ("data: &d {synthetic: {n_images: 100}}\nbase_net: {<<: {epochs: 3}, epochs: 4}\n", [],
     lambda s: s.base_net.epochs == 4),
    ("storage: ~/runs\ndata: {path: ~/data, cache_dir: ~/cache}\n", [],
     lambda s: (s.storage, s.data.path, s.data.cache_dir) == tuple(os.path.expanduser(f"~/{d}") for d in
                                                                   ("runs", "data", "cache"))),
])
def test_edge_values_that_are_fine(tmp_path, text, overrides, check):
    (tmp_path / "s.yaml").write_text(text)
    assert check(load_spec(tmp_path / "s.yaml", overrides))


# --- family 4: interrupts and concurrency ----------------------------------------------------------------

def interrupted(*_args, **_kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, module, function", [
    ("collect", "correctsweep.report.plots", "heatmap"),  # inside the report's temporary folder
    ("best", "correctsweep.best", "rationale"),  # inside best/'s temporary folder
])
def test_ctrl_c_while_writing_is_one_line_130_and_keeps_the_old_output(run, capsys, monkeypatch, command, module,
                                                                       function):
    monkeypatch.setattr(f"{module}.{function}", interrupted)
    before = snapshot(run)
    assert cli.main([command, str(run)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err
    assert snapshot(run) == before and not list(run.rglob(".tmp-*"))


def test_ctrl_c_in_a_sweep_is_one_line_130_and_releases_its_lock(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "check_folds", interrupted)
    args = ["sweep", SMOKE, "--set", f"storage={tmp_path}"]
    assert cli.main(args) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err
    assert not (tmp_path / "smoke" / "spec.yaml").exists()
    with RunLayout(tmp_path / "smoke").sweep_lock():  # released: a new sweep may start
        pass


def test_a_second_sweep_of_a_running_one_is_one_line(tmp_path, capsys):
    with RunLayout(tmp_path / "smoke").sweep_lock():
        err = refused(tmp_path, capsys, ["sweep", SMOKE, "--set", f"storage={tmp_path}"], "already running")
    assert f"pid {os.getpid()}" in err


@pytest.mark.slow  # a second collect in a process of its own (it imports the package afresh)
def test_two_collects_at_once_both_succeed(run, capsys):
    """Another process's collect and this one's, started while the other writes its report."""
    cmd = [sys.executable, "-m", "correctsweep.cli", "collect", str(run)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    other = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(run.glob(".tmp-report-*")) and other.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert other.poll() is None, "the other collect ended before it was seen writing"
        assert cli.main(["collect", str(run)]) == 0
        out = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, out
    assert (run / "report" / "report.md").is_file() and not list(run.rglob(".tmp-*"))


def test_a_killed_writers_leftovers_are_removed_and_a_file_in_the_folders_place_replaced(run):
    (run / ".tmp-best-deadbeef").mkdir()
    (run / ".tmp-old-best-deadbeef").write_text("left by a kill")
    shutil.rmtree(run / "best")
    (run / "best").write_text("a file where best/ belongs")
    assert cli.main(["best", str(run)]) == 0
    assert (run / "best" / "best_config.yaml").is_file() and not list(run.glob(".tmp-*"))


@pytest.mark.slow
def test_sigterm_ends_a_sweep_with_one_line_and_stops_its_ray(tiny_spec, tmp_path):
    """A real SIGTERM to a sweep in a process of its own, which starts (and must stop) a Ray of its own."""
    import psutil

    cmd = [sys.executable, "-u", "-m", "correctsweep.cli", "sweep", str(tiny_spec), "--set", f"storage={tmp_path}",
           "--set", "folds=[none]", "--set", "resources.cpus_per_trial=1"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "started" in line or time.monotonic() > deadline:
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the sweep started no Ray process"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("correctsweep: interrupted")
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"Ray processes left running: {[p.name() for p in alive]}"


# --- family 5: remote storage and tracking ---------------------------------------------------------------

@pytest.fixture
def blackhole():
    """A TCP address that accepts connections and never answers: a server that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def quick_probes(monkeypatch):
    # every probe here fails: by an error, or (the servers that never answer, a machine that is slow to
    # start the probe's Python) by these timeouts, with the same one line
    monkeypatch.setattr(reach, "TIMEOUT_S", 2.0)
    monkeypatch.setattr(tracking, "TRACKING_TIMEOUT_S", 5.0)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential look-up on a metadata server


STORAGE_CASES = [
    ("s3 refusing connections", lambda h: f"s3://bucket/x?endpoint_override=127.0.0.1:{closed_port()}&scheme=http",
     "cannot reach storage s3://bucket/x", "AWS_ACCESS_KEY_ID"),
    ("s3 not answering", lambda h: f"s3://bucket/x?endpoint_override={h}&scheme=http",
     "cannot reach storage s3://bucket/x", "AWS_ACCESS_KEY_ID"),
    ("gs without credentials", lambda h: "gs://correctsweep-drill-bucket/x", "cannot reach storage gs://",
     "GOOGLE_APPLICATION_CREDENTIALS"),
    ("unknown scheme", lambda h: "nosuchfs://bucket/x", "cannot reach storage nosuchfs://", "credentials"),
]


@pytest.mark.parametrize("command", ["trial", "sweep"])
@pytest.mark.parametrize("name, uri, expect, fix", STORAGE_CASES, ids=[c[0] for c in STORAGE_CASES])
def test_unreachable_storage_is_one_line_in_bounded_time(tmp_path, capsys, quick_probes, blackhole, name, uri,
                                                         expect, fix, command):
    storage = uri(blackhole)
    argv = [command, SMOKE, "--set", f"storage={storage}"] + (["--fold", "3"] if command == "trial" else [])
    started = time.monotonic()
    err = refused(tmp_path, capsys, argv, expect)
    assert fix in err and time.monotonic() - started < 30
    assert not mirror_of(storage).exists(), "a local mirror was created for an unreachable URI"


@pytest.mark.parametrize("command", ["collect", "best"])
@pytest.mark.parametrize("run_dir", ["gs://correctsweep-drill-bucket/smoke", "nosuchfs://bucket/smoke"])
def test_unreachable_run_dir_is_one_line(tmp_path, capsys, quick_probes, command, run_dir):
    refused(tmp_path, capsys, [command, run_dir], f"cannot reach storage {run_dir}")
    assert not RunLayout.at(run_dir).root.exists()


@pytest.mark.parametrize("name, uri, expect", [
    ("server refusing connections", lambda h: f"http://127.0.0.1:{closed_port()}", "does not answer"),
    ("server not answering", lambda h: f"http://{h}", "does not answer"),
    ("unknown scheme", lambda h: "nosuch://x", "does not answer"),
])
def test_unreachable_tracking_is_one_line_before_any_write(tmp_path, capsys, quick_probes, blackhole, name, uri,
                                                           expect):
    args = ["sweep", SMOKE, "--set", f"storage={tmp_path}", "--set", f"tracking={{mlflow: '{uri(blackhole)}'}}"]
    err = refused(tmp_path, capsys, args, expect)
    assert "sqlite:///" in err and not (tmp_path / "smoke").exists()


def test_a_file_store_is_supported(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    spec = load_spec(SMOKE, [f"tracking={{mlflow: 'file://{tmp_path}/mlruns'}}"])
    tracking.check_tracking(spec)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true" and (tmp_path / "mlruns").is_dir()


# --- family 6: only an experiment this tool wrote is resumed ---------------------------------------------

class Planted:
    """Unpickling it leaves a file behind: what running a planted pickle's code would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def experiment_of(tmp_path):
    spec = sweep.absolute(load_spec(SMOKE, [f"storage={tmp_path}"]))
    layout = RunLayout.of(spec)
    name = f"tune-{digest(spec.to_dict())}"
    return layout.root / name, layout.state_record(name)


def plant(tmp_path, record: bool, change=None):
    experiment, record_path = experiment_of(tmp_path)
    (experiment / "trial_0").mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (experiment / "experiment_state-2026.json").write_text('{"trial_data": []}')
    if record:
        tune_state.StateRecord(str(experiment), record_path).save()
    if change:
        change(experiment, tmp_path / "pwned")
    return experiment


UNREADABLE_RECORDS = [
    ("no record beside the experiment", False, lambda e, m: (e / "tuner.pkl").write_bytes(pickle.dumps(Planted(m)))),
    ("the record edited", True, lambda e, m: (e.parent / f"{e.name}.state.json").write_text('{"sha256": 5}')),
    ("a recorded file's content changed", True, lambda e, m: (e.parent / f"{e.name}.state.json").write_text(
        (e.parent / f"{e.name}.state.json").read_text().replace('"gAS', '"gAT'))),
]


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("name, record, change", UNREADABLE_RECORDS, ids=[c[0] for c in UNREADABLE_RECORDS])
def test_an_experiment_without_a_readable_record_is_never_resumed(tmp_path, capsys, name, record, change, resume):
    plant(tmp_path, record, change)
    args = ["sweep", SMOKE, "--set", f"storage={tmp_path}"] + (["--resume"] if resume else [])
    err = refused(tmp_path, capsys, args, "no readable record")
    assert "not resuming" in err and not (tmp_path / "pwned").exists()


PLANTED = [
    ("tuner.pkl replaced", lambda e, m: (e / "tuner.pkl").write_bytes(pickle.dumps(Planted(m)))),
    ("experiment state edited", lambda e, m: (e / "experiment_state-2026.json").write_text('{"x": 1}')),
    ("a state file added", lambda e, m: (e / "basic-variant-state-2027.json").write_bytes(pickle.dumps(Planted(m)))),
    ("a trial's error.pkl planted", lambda e, m: (e / "trial_0" / "error.pkl").write_bytes(pickle.dumps(Planted(m)))),
    ("a state file deleted", lambda e, m: (e / "tuner.pkl").unlink()),
]


@pytest.mark.parametrize("name, change", PLANTED, ids=[c[0] for c in PLANTED])
def test_a_changed_state_file_is_set_back_to_the_recorded_one_before_tune_reads_it(tmp_path, name, change):
    experiment, record = experiment_of(tmp_path)
    plant(tmp_path, record=True)
    recorded = {p.relative_to(experiment): p.read_bytes() for p in experiment.rglob("*") if p.is_file()}
    change(experiment, tmp_path / "pwned")
    assert tune_state.restore_state(str(experiment), record)  # names what it set back
    assert {p.relative_to(experiment): p.read_bytes() for p in experiment.rglob("*") if p.is_file()} == recorded
    assert not (tmp_path / "pwned").exists() and not list(experiment.rglob(".tmp-*"))


def test_an_unchanged_experiment_is_resumed_as_it_is(tmp_path):
    experiment, record = experiment_of(tmp_path)
    plant(tmp_path, record=True)
    before = {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file()}
    assert tune_state.restore_state(str(experiment), record) == []
    assert {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file()} == before


# --- family 8: what a run directory can make the tool do ------------------------------------------------
# A run directory may come from someone else: nothing in it decides what code is imported, no path its records
# hold leads out of it, and no link planted in it is written through. Each case plants one kind of hostile
# file in a copy of the tiny run beside a folder of the user's (`outside`); the command is refused in one line,
# the planted module never runs (it would leave tmp_path/pwned) and nothing in the run or outside changes.

PLANTED_MODULE = "planted_code"


def hostile(tmp_path):
    """The user's folder beside the run, and the module planted in the run (importing it leaves the marker)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.txt").write_text("years of work")
    return outside


def planted_module(run, marker):
    (run / f"{PLANTED_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, num_classes, **kwargs):\n"
        "        super().__init__()\n        self.fc = nn.LazyLinear(num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_spec(change):
    def edit(run, outside):
        import yaml

        spec = yaml.safe_load((run / "spec.yaml").read_text())
        change(spec)
        (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return edit


def net_arch(folder):
    return lambda run, outside: edit_json(one(run, f"{folder}/model.json"),
                                          lambda m: m["net"].update(arch=f"{PLANTED_MODULE}:Net"))


def result_of(change):
    return lambda run, outside: edit_json(run / "results" / "fold=3" / "seed=0.json", change)


def link(at, to):
    """`at` (relative to the run) made a link to `to` (a callable of the run and outside) in its place."""
    def plant(run, outside):
        path, target = run / at, to(run, outside)
        if path.is_dir():
            shutil.move(path, target) if not target.exists() else shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return plant


def fold_lock(run):
    return f"locks/fold=3-seed=0-{one(run, f'models/{FOLD}/net-*').name}.lock"


def victim(run, outside):
    return outside / "thesis.txt"


def moved_out(run, outside):
    return outside / "moved"


def best_choice(change):
    """best_config.yaml's choice for fold 3 changed."""
    def edit(run, outside=None):
        import yaml

        config = yaml.safe_load((run / "best" / "best_config.yaml").read_text())
        change(next(c for c in config["folds"] if c["fold"] == "3"))
        (run / "best" / "best_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return edit


def best_artifact(path):
    return best_choice(lambda choice: choice["artifacts"].update(weights=path))


TRIAL = lambda run: ["trial", str(run / "spec.yaml"), "--fold", "3", "--seed", "0"]
COLLECT, BEST = (lambda run: ["collect", str(run)]), (lambda run: ["best", str(run)])
PREDICT = lambda run: ["predict", str(run), "--fold", "3", "split:test", "--out", str(run.parent.parent / "h.parquet")]
PREDICT_SEED = lambda run: PREDICT(run) + ["--seed", "0"]
NOT_IMPORTED = f"names module {PLANTED_MODULE}, which is not imported"

HOSTILE_CASES = [
    # code: a module named by something read back from the run directory is never imported
    ("best's model.json names a module", net_arch("best/fold=3/seed=0/net"), PREDICT, NOT_IMPORTED),
    ("a trial's model.json names a module", net_arch(f"models/{FOLD}/*"), PREDICT_SEED, NOT_IMPORTED),
    ("spec.yaml names a net module, collect", edit_spec(lambda s: s["base_net"].update(arch=f"{PLANTED_MODULE}:Net")),
     COLLECT, NOT_IMPORTED),
    ("spec.yaml names a net module, best", edit_spec(lambda s: s["base_net"].update(arch=f"{PLANTED_MODULE}:Net")),
     BEST, NOT_IMPORTED),
    ("spec.yaml names a net module, predict",
     edit_spec(lambda s: s["base_net"].update(arch=f"{PLANTED_MODULE}:Net")), PREDICT, NOT_IMPORTED),
    ("spec.yaml names a corrector kind", edit_spec(lambda s: s["corrector"].update(kinds=[f"{PLANTED_MODULE}:Kind"])),
     COLLECT, NOT_IMPORTED),
    ("spec.yaml names a source", edit_spec(lambda s: s["data"].update(source=f"{PLANTED_MODULE}:Source")),
     COLLECT, NOT_IMPORTED),
    ("spec.yaml names a detector", edit_spec(lambda s: s["detectors"]["names"].append(f"{PLANTED_MODULE}:Det")),
     BEST, NOT_IMPORTED),
    ("spec.yaml holds a plug-in's settings", edit_spec(lambda s: s["corrector"].update({f"{PLANTED_MODULE}:K": {}})),
     COLLECT, NOT_IMPORTED),
    ("winner.json names a kind", lambda run, outside: edit_json(
        one(run, "best/fold=3/seed=0/corrector/winner.json"), lambda w: w.update(kind=f"{PLANTED_MODULE}:Kind")),
     PREDICT, NOT_IMPORTED),
    # links: never written through
    ("a fold's lock file a link out", lambda run, outside: link(fold_lock(run), victim)(run, outside), TRIAL,
     "outside the run directory"),
    ("the sweep lock a link out", link("locks/sweep.lock", victim), lambda run: ["sweep", str(run / "spec.yaml")],
     "outside the run directory"),
    ("results a link out", link("results", moved_out), TRIAL, "outside the run directory"),
    ("results a link out, collect", link("results", moved_out), COLLECT, "outside the run directory"),
    ("the report's lock a link out", link(".report.lock", victim), COLLECT, "outside the run directory"),
    ("best's lock a link out", link(".best.lock", victim), BEST, "outside the run directory"),
    ("best's net a link out", link("best/fold=3/seed=0/net", moved_out), PREDICT, "not inside the run directory"),
    # paths held by records: resolved inside the run or refused
    ("best_config's artifact ../..", best_artifact("../../../outside/net/weights.pt"), PREDICT,
     "not inside the run directory"),
    ("best_config's artifact absolute", best_artifact("/etc/passwd"), PREDICT, "not inside the run directory"),
    ("a result's corrector absolute", result_of(lambda r: r["paths"].update(corrector="/tmp")), BEST,
     "not inside the run directory"),
    ("a result's model path ../..", result_of(lambda r: r["paths"].update(model="../../outside")), PREDICT_SEED,
     "not inside the run directory"),
    ("a result's predictions path ../..", result_of(lambda r: r["paths"]["predictions"].update(test="../x.parquet")),
     COLLECT, "not inside the run directory"),
    ("a result's fold ../../..", result_of(lambda r: r.update(fold="../../..")), COLLECT, "which is not where it lies"),
    ("a result's fold another fold", result_of(lambda r: r.update(fold="none")), BEST, "which is not where it lies"),
]


@pytest.mark.parametrize("name, plant, command, expect", HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES])
def test_a_run_directory_runs_no_code_and_writes_nowhere_else(run, tmp_path, capsys, monkeypatch, name, plant,
                                                              command, expect):
    outside = hostile(tmp_path)
    (outside / "net").mkdir()
    planted_module(run, tmp_path / "pwned")
    monkeypatch.syspath_prepend(str(run))  # as if the command were started from inside the run directory
    monkeypatch.chdir(run)
    plant(run, outside)
    refused(tmp_path, capsys, command(run), expect)
    assert not (tmp_path / "pwned").exists(), "a module planted in the run directory was imported"
    assert (outside / "thesis.txt").read_text() == "years of work"
    assert PLANTED_MODULE not in sys.modules


def test_import_lets_a_user_run_a_module_on_purpose(run, tmp_path, capsys, monkeypatch):
    """--import MODULE is the user's choice: the module is imported, and then the run's records may name it."""
    planted_module(run, tmp_path / "ran")
    monkeypatch.syspath_prepend(str(run))
    monkeypatch.delitem(sys.modules, PLANTED_MODULE, raising=False)
    edit_spec(lambda s: s["base_net"].update(arch=f"{PLANTED_MODULE}:Net"))(run, None)
    try:
        assert cli.main(["collect", str(run), "--import", PLANTED_MODULE]) == 0
    finally:
        sys.modules.pop(PLANTED_MODULE, None)
    assert (tmp_path / "ran").exists()
    refused(tmp_path, capsys, ["collect", str(run), "--import", "no_such_module_here"], "'--import' 'no_such_module")


NAME_CASES = [
    ("HTML in a class name", "<img src=x onerror=alert(1)>", "<img"),
    ("a line break in a class name", "Fear\n| injected | row |", "\n| injected"),
    ("a | in a class name", "a|b", "a|b"),
    ("a carriage return in a class name", "Fear\r\n# heading", "\n# heading"),
]


@pytest.mark.parametrize("name, class_name, raw", NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_class_names_from_the_data_are_shown_literally_in_the_report(run_builder, name, class_name, raw):
    built = run_builder([1, 2, "none"], [0]).add("1", 0, corrected=2).add("none", 0, full_misses=1)
    for path in (built.dir / "results").rglob("*.json"):
        edit_json(path, lambda r: r["class_names"].__setitem__(0, class_name))
    assert cli.main(["collect", str(built.dir)]) == 0
    text = (built.dir / "report" / "report.md").read_text()
    assert raw not in text
    tables = [[line for line in block.splitlines() if line.startswith("|")] for block in text.split("\n\n")]
    for table in filter(None, tables):  # every row of a table has its header's columns
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in table}
        assert len(cells) == 1, table


# --- family 9: outputs never replace what the user or the run owns ---------------------------------------

def export(to):
    return lambda run, tmp: ["export", str(run), "--fold", "3", "--onnx", str(to(run, tmp))]


def predict_to(to, *extra):
    return lambda run, tmp: ["predict", str(run), "--fold", "3", "split:test", "--out", str(to(run, tmp)), *extra]


def users_folder(run, tmp):
    (tmp / "mine").mkdir(exist_ok=True)
    (tmp / "mine" / "thesis.txt").write_text("years of work")
    return tmp / "mine"


def users_file(name):
    def make(run, tmp):
        (tmp / name).write_text("id,grade\nalice,A\n")
        return tmp / name
    return make


OUTPUT_CASES = [
    ("export into a folder of the user's", export(users_folder), "not an export of this tool"),
    ("export onto the run directory", export(lambda r, t: r), "is the run directory"),
    ("export onto best/", export(lambda r, t: r / "best"), "a folder inside it"),
    ("export into the run's models", export(lambda r, t: r / "models" / "onnx"), "a folder inside it"),
    ("export onto the storage holding the run", export(lambda r, t: r.parent), "one holding it"),
    ("export onto .", lambda r, t: (users_folder(r, t), os.chdir(t / "mine"), export(lambda r, t: ".")(r, t))[2],
     "not an export of this tool"),
    ("export onto a file", export(users_file("notes.csv")), "is a file"),
    ("predict onto the run's spec.yaml", predict_to(lambda r, t: r / "spec.yaml"), "inside the run directory"),
    ("predict onto best's model.ubj", predict_to(lambda r, t: one(r, "best/fold=3/seed=0/corrector/model.ubj")),
     "inside the run directory"),
    ("predict onto a link into the run", predict_to(lambda r, t: (t / "l.parquet").symlink_to(r / "spec.yaml")
                                                    or t / "l.parquet"), "inside the run directory"),
    ("predict onto a folder", predict_to(users_folder), "is a folder"),
    ("predict onto a file of the user's", predict_to(users_file("grades.csv")), "not a predictions table"),
    ("predict onto a Parquet of the user's", predict_to(lambda r, t: pd.DataFrame({"a": [1]}).to_parquet(
        t / "mine.parquet") or t / "mine.parquet"), "not a predictions table"),
]


@pytest.mark.parametrize("name, argv, expect", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_an_output_never_replaces_what_it_did_not_write(run, tmp_path, capsys, monkeypatch, name, argv, expect):
    monkeypatch.chdir(tmp_path)
    refused(tmp_path, capsys, argv(run, tmp_path), expect)


@pytest.mark.parametrize("out", ["h.parquet", "h.csv"])
def test_predict_replaces_its_own_output_and_a_file_given_force(run, tmp_path, out):
    target = tmp_path / out
    assert cli.main(predict_to(lambda r, t: target)(run, tmp_path)) == 0
    first = target.read_bytes()
    assert cli.main(predict_to(lambda r, t: target)(run, tmp_path)) == 0  # its own earlier output
    assert target.read_bytes() == first
    target.write_text("id,grade\nalice,A\n")
    assert cli.main(predict_to(lambda r, t: target, "--force")(run, tmp_path)) == 0
    assert target.read_bytes() == first


SHAPE_CASES = [  # images given to load_corrected(...).predict: never a guess of which axis is which
    ("one HxWx3 image", (48, 48, 3), "ambiguous"),
    ("one CxHxW image", (3, 24, 24), "ambiguous"),
    ("one HxW image as [1, H, W]", (1, 24, 24), "ambiguous"),
    ("zero images", (0, 3, 24, 24), "hold no pixels"),
    ("images of zero size", (2, 3, 0, 0), "hold no pixels"),
    ("channels last", (2, 24, 24, 3), "cannot be mapped"),
]


@pytest.mark.parametrize("name, shape, expect", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_an_ambiguous_image_array_is_refused(tiny_run, name, shape, expect):
    from correctsweep import load_corrected
    from correctsweep.errors import CorrectsweepError

    clf = load_corrected(tiny_run, fold=3, device="cpu")
    with pytest.raises(CorrectsweepError, match=expect):
        clf.predict(np.zeros(shape, dtype=np.uint8))


# --- family 10: the system refuses a write -----------------------------------------------------------------

def refusing(number, only=None):
    """A stand-in for an os or pathlib function that fails as the system would with `number` (on the calls
    whose first argument's name contains `only`)."""
    def make(real):
        def fail(*args, **kwargs):
            if only is None or only in str(args[0]):
                raise OSError(number, os.strerror(number), str(args[0]))
            return real(*args, **kwargs)
        return fail
    return make


def predict_out(run, tmp):
    return predict_to(lambda r, t: t / "out" / "h.parquet")(run, tmp)


OS_CASES = [
    ("collect, report protected (EPERM)", lambda r, t: ["collect", str(r)], os, "replace", refusing(errno.EPERM),
     "Operation not permitted; make it writable"),
    ("collect, disk full (ENOSPC)", lambda r, t: ["collect", str(r)], os, "replace", refusing(errno.ENOSPC),
     "No space left on device; free space"),
    ("best, disk full (ENOSPC)", lambda r, t: ["best", str(r)], os, "replace", refusing(errno.ENOSPC),
     "No space left on device"),
    ("best, file size limit (EFBIG)", lambda r, t: ["best", str(r)], Path, "write_bytes", refusing(errno.EFBIG),
     "File too large; the file size limit"),
    ("collect, file size limit (EFBIG)", lambda r, t: ["collect", str(r)], Path, "write_text",
     refusing(errno.EFBIG, "report.md"), "report: File too large"),
    ("predict, file size limit (EFBIG)", predict_out, os, "replace", refusing(errno.EFBIG), "File too large"),
    ("predict, output protected (EPERM)", predict_out, os, "replace", refusing(errno.EPERM),
     "Operation not permitted"),
    ("predict, read-only filesystem (EROFS)", predict_out, os, "replace", refusing(errno.EROFS), "read-only"),
    ("best, an immutable file in the old best/", lambda r, t: ["best", str(r)], atomic, "_undeletable",
     lambda real: lambda path: path / "best_config.yaml", "best_config.yaml cannot be deleted"),
]


@pytest.mark.parametrize("name, argv, owner, function, failing, expect", OS_CASES, ids=[c[0] for c in OS_CASES])
def test_a_refused_write_is_one_line_and_keeps_the_old_output(run, tmp_path, capsys, monkeypatch, name, argv, owner,
                                                              function, failing, expect):
    (tmp_path / "out").mkdir()
    args = argv(run, tmp_path)
    monkeypatch.setattr(owner, function, failing(getattr(owner, function)))
    refused(tmp_path, capsys, args, expect)


LIMITED = [  # a real file size limit (ulimit -f) on each command that writes large files
    ("collect", lambda r, t: ["collect", str(r)], "report: File too large"),
    ("best", lambda r, t: ["best", str(r)], "File too large; the file size limit"),
    ("predict", predict_out, "h.parquet: File too large"),
]


@pytest.mark.slow  # a process of its own per command (the limit must not reach pytest's own files)
@pytest.mark.parametrize("name, argv, expect", LIMITED, ids=[c[0] for c in LIMITED])
def test_a_real_file_size_limit_is_one_line(run, tmp_path, name, argv, expect):
    import resource

    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "correctsweep.cli", *argv(run, tmp_path)], capture_output=True,
                          text=True, env=env, preexec_fn=limit, timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1 and expect in err, err
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob(".tmp-*"))


def test_a_previous_output_that_cannot_be_removed_is_named(run, tmp_path, capsys, monkeypatch):
    """An immutable file in the old report: the new report is in place, and the line names what is left."""
    real = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda path, *a, **k: refusing(errno.EPERM, "old-report")(real)(
        path, *a, **k) if not k.get("ignore_errors") else real(path, *a, **k))
    assert cli.main(["collect", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be removed" in err and "chattr -i" in err, err
    assert (run / "report" / "report.md").is_file()
    (left,) = run.glob(".tmp-old-report-*")
    assert str(left) in err


# --- family 11: the run directory's own folders of the wrong kind ------------------------------------------

def a_file(at):
    def plant(run):
        path = run / at(run) if callable(at) else run / at
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a folder")
    return plant


def a_folder(at):
    def plant(run):
        path = run / (at(run) if callable(at) else at)
        path.unlink(missing_ok=True)
        (path / "x").mkdir(parents=True)
    return plant


KIND_CASES = [
    ("locks a file", a_file("locks"), TRIAL, "locks: File exists; it is the wrong kind"),
    ("a fold's lock file a folder", a_folder(fold_lock), TRIAL, "Is a directory; it is the wrong kind"),
    ("the sweep lock a folder", a_folder("locks/sweep.lock"), lambda r: ["sweep", str(r / "spec.yaml")],
     "sweep.lock: Is a directory"),
    (".report.lock a folder", a_folder(".report.lock"), COLLECT, ".report.lock: Is a directory"),
    (".best.lock a folder", a_folder(".best.lock"), BEST, ".best.lock: Is a directory"),
    ("features a file", a_file("features"), TRIAL, "features: Not a directory; it is the wrong kind"),
    ("results a file", a_file("results"), COLLECT, "no results"),
]


@pytest.mark.parametrize("name, plant, command, expect", KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_a_folder_of_the_wrong_kind_is_one_line(run, tmp_path, capsys, name, plant, command, expect):
    plant(run)
    refused(tmp_path, capsys, command(run), expect)


# --- family 7: the console -------------------------------------------------------------------------------

class FakeTrial:
    def __init__(self, trial_id, status, fold):
        self.trial_id, self.status, self.config, self.path = trial_id, status, {"fold": fold, "seed": 0}, "/x"
        self.last_result = {"stage": "done", "done": True}  # a trial that finished (not one a scheduler stopped)


def test_progress_line_counts_trials_and_estimates_from_measured_stages(tmp_path, capsys):
    lines = console.ProgressLines(tmp_path / "logs")
    trials = [FakeTrial("a", "RUNNING", 1), FakeTrial("b", "PENDING", 2), FakeTrial("c", "PENDING", 3)]
    lines.on_trial_start(0, trials, trials[0])
    assert "ETA once every stage has been timed" in capsys.readouterr().out
    for stage in ("extract", "corrector", "done"):
        lines.since["a"] -= 10  # each stage took 10 s
        lines.on_trial_result(0, trials, trials[0], {"stage": stage, "accuracy_f": 0.5, "accuracy_h": 0.6,
                                                      "gain_excluded": 0.1, "pooled_harm": 0.02,
                                                      "harm_bound": 0.05, "node": "n" * 8})
    lines.on_trial_complete(0, trials, trials[0])
    out = capsys.readouterr().out
    assert "excluded-class Gain 0.100, pooled Harm 0.020 (certified bound 0.05)" in out
    assert all(f"fold 1 seed 0: {stage} done" in out for stage in ("train", "extract", "corrector"))
    assert out.splitlines()[-1].endswith("1 of 3 trials done, 0 running, 0 failed; ETA 1 min 0 s")  # 2 x 30 s
