"""The drill, continued: a run directory's own files, spec edge cases, interrupts and concurrency,
remote storage and tracking, and Tune state planted in a run. Each bad case gets one line naming the
thing, a non-zero exit, and leaves every file as it was (nothing half-written, nothing published); each
recoverable case succeeds and recomputes what did not verify."""
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from correctsweep import cli, console, reach, sweep, tracking, tune_state
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
]


@pytest.mark.parametrize("name, argv, expect", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_run_file_is_one_line_and_publishes_nothing(run, tmp_path, capsys, name, argv, expect):
    args = argv(run)
    err = refused(tmp_path, capsys, args, expect)
    if "fold 3 seed 0:" in err:  # a fold's file: the fix names the trial to rerun, checked below to work
        assert f"correctsweep trial {run / 'spec.yaml'} --fold 3 --seed 0" in err


RECOVER_CASES = [
    ("model truncated", lambda r: truncate(corrector_file(r, "model.ubj")), "refitting"),
    ("model a folder", lambda r: to_folder(corrector_file(r, "model.ubj")), "refitting"),
    ("winner.json without checksums", lambda r: drop_checksums(corrector_file(r, "winner.json")), "refitting"),
    ("journal damaged in the middle", lambda r: garbage_mid_journal(corrector_file(r, "study.journal")),
     "cut it back"),
]


@pytest.mark.parametrize("name, damage, says", RECOVER_CASES, ids=[c[0] for c in RECOVER_CASES])
def test_the_advised_trial_rerun_recomputes_and_best_then_publishes(run, capsys, name, damage, says):
    damage(run)
    assert cli.main(["best", str(run)]) == 2
    capsys.readouterr()
    assert cli.main(["trial", str(run / "spec.yaml"), "--fold", "3", "--seed", "0"]) == 0
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


# --- family 7: the console -------------------------------------------------------------------------------

class FakeTrial:
    def __init__(self, trial_id, status, fold):
        self.trial_id, self.status, self.config, self.path = trial_id, status, {"fold": fold, "seed": 0}, "/x"


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
