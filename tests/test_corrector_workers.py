"""corrector.workers: several Optuna workers (spawned processes here) on one study; Ctrl-C in the search.
Each worker process imports the package afresh (torch included), which is most of these tests' seconds."""
import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_corrector import CLASSES, feature_set, small_cfg

from correctsweep import corrector
from correctsweep.cli import main
from correctsweep.corrector import FINISHED, STUDY_NAME, _worker_died, search, study_storage

INTERRUPTED = "correctsweep: interrupted; rerun the same command to continue where it stopped"


@pytest.fixture(autouse=True)
def outside_ray(monkeypatch):
    """The workers of a search outside a Ray sweep (`correctsweep trial`): spawned processes, even while the
    test session's shared Ray (conftest) is up, with which the search would ask Ray for its workers."""
    monkeypatch.setattr(corrector, "_in_ray", lambda: False)


def trials(workdir):
    return optuna.load_study(study_name=STUDY_NAME, storage=study_storage(workdir)).trials


@contextlib.contextmanager
def both_workers_ready(workdir, workers=2, limit_s=120):
    """Hold the search's ask.lock until `workers` worker processes have loaded XGBoost (they are then one
    step from asking): a loaded machine can take seconds to spawn the second, by which time the first
    would have run the whole budget alone. The lock's mtime is kept fresh, so the workers' grace period
    (10 s) never breaks it."""
    lock, done = Path(workdir) / "ask.lock", threading.Event()

    def ready():
        found = 0
        for child in multiprocessing.active_children():
            with contextlib.suppress(OSError):
                found += "xgboost" in Path(f"/proc/{child.pid}/maps").read_text()
        return found >= workers

    def hold():
        deadline = time.monotonic() + limit_s
        while not done.is_set() and not ready() and time.monotonic() < deadline:
            os.utime(lock)
            time.sleep(0.2)
        lock.unlink()

    lock.touch()
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        yield
    finally:
        done.set()
        holder.join()


@pytest.mark.slow  # two spawned worker processes, each importing the package afresh
def test_two_workers_share_the_budget_and_the_winner_is_the_best(tmp_path):
    calls = []
    # candidates slow enough (~0.5 s) that a worker waking from the lock's back-off (up to 1 s) still finds some
    cfg = small_cfg(n_candidates=8, workers=2, max_rounds=200, early_stopping_rounds=200)
    with both_workers_ready(tmp_path):
        result = search(feature_set(400, 0), feature_set(120, 1), cfg, tmp_path, threads=2, on_candidate=calls.append)
    done = [t for t in trials(tmp_path) if t.state in FINISHED]
    assert result.n_candidates == 8 and len(done) == 8  # exactly the budget, not one per worker more
    assert sorted(c["candidate"] for c in calls) == sorted(t.number for t in done)  # each reported once
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2 and f"{socket.gethostname()}:{os.getpid()}" not in workers  # two processes
    params = [t.params for t in done]
    assert all(params.count(p) == 1 for p in params)  # siblings did not propose one candidate twice
    best = max((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result.cv_score == best.value and result.tau == best.user_attrs["tau"]
    assert result.params["nthread"] == 2  # the refit, in the parent, has all the threads
    assert best.user_attrs["params"]["nthread"] == 1  # each worker had half
    assert result.pred_h.shape == (120,) and set(result.pred_h) <= set(CLASSES)
    assert not (tmp_path / "ask.lock").exists()


@pytest.mark.slow  # a real SIGKILL of a spawned worker, and its replacement's start-up
def test_a_killed_workers_candidate_is_retried_once(tmp_path):
    """SIGKILL one worker in the middle of a candidate: a sibling or its replacement runs the candidate
    again, and the search still finishes exactly n_candidates."""
    killed = {}

    def kill_one():
        while not killed and kill_thread_alive.is_set():
            for t in trials(tmp_path) if (tmp_path / "study.journal").exists() else []:
                if t.state != TrialState.RUNNING or "params" not in t.user_attrs:  # all suggested: in CV
                    continue
                pid = int(t.user_attrs["worker"].rpartition(":")[2])
                os.kill(pid, signal.SIGSTOP)  # frozen, it cannot finish the trial while we look again
                again = next(u for u in trials(tmp_path) if u.number == t.number)
                if again.state == TrialState.RUNNING:
                    os.kill(pid, signal.SIGKILL)
                    killed.update(number=t.number)
                    return
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)

    kill_thread_alive = threading.Event()
    kill_thread_alive.set()
    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        cfg = small_cfg(n_candidates=8, workers=2, max_rounds=200, early_stopping_rounds=200, tune_taps=False)
        result = search(feature_set(400, 0), feature_set(120, 1), cfg, tmp_path, threads=2)
    finally:
        kill_thread_alive.clear()
        killer.join()
    assert killed, "no worker was caught in the middle of a candidate"
    all_trials = trials(tmp_path)
    victim = all_trials[killed["number"]]
    assert victim.state == TrialState.FAIL
    retries = [t for t in all_trials if t.system_attrs.get("fixed_params") == victim.params]
    assert len(retries) == 1 and retries[0].state in FINISHED and retries[0].params == victim.params
    assert result.n_candidates == 8 and sum(t.state in FINISHED for t in all_trials) == 8


def test_a_dead_worker_is_told_from_a_live_one():
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    frozen = lambda worker: optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"worker": worker})
    assert _worker_died(frozen(f"{here}:{dead.pid}"))
    assert not _worker_died(frozen(f"{here}:{os.getpid()}"))
    assert not _worker_died(frozen(f"another-host:{dead.pid}"))  # not ours to judge


def test_workers_must_be_positive(capsys):
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", "corrector.workers=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'corrector.workers' must be >= 1" in err


SEARCH = """
import sys
import optuna
import correctsweep.trial
from correctsweep.cli import main
from test_corrector_workers import search_only

optuna.logging.set_verbosity(optuna.logging.WARNING)  # stderr: the CLI's lines only
workdir, workers = sys.argv[1], int(sys.argv[2])
correctsweep.trial.run_trial = search_only(workdir, workers)  # `correctsweep trial`, with the search as its trial
sys.exit(main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", f"storage={workdir}"]))
"""


def search_only(workdir, workers):
    """A trial that is the corrector search alone, printing each candidate as it finishes."""
    def run_trial(spec, fold, seed, log=print, progress=None):
        result = search(feature_set(400, 0), feature_set(120, 1),
                        small_cfg(n_candidates=10, workers=workers, max_rounds=100, early_stopping_rounds=100),
                        workdir, threads=2, on_candidate=lambda c: print("candidate", c["candidate"], flush=True))
        print("finished", result.n_candidates, flush=True)
    return run_trial


@pytest.mark.slow  # a real Ctrl-C of `correctsweep trial` in a process of its own, and the rerun
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_in_the_search_prints_one_line_and_the_rerun_finishes(tmp_path, capsys, monkeypatch, workers):
    """A real Ctrl-C (SIGINT to the process group, workers included) of `correctsweep trial` in a process of
    its own; the rerun runs here."""
    tests = Path(__file__).parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", SEARCH, str(tmp_path), str(workers)]
    # its own session: Ctrl-C reaches the whole process group, as in a terminal
    proc = subprocess.Popen(cmd, cwd=tests.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    seen = [proc.stdout.readline() for _ in range(2)]
    assert all(line.startswith("candidate") for line in seen), seen
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == INTERRUPTED + "\n"
    assert "finished" not in out
    left_running = [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]
    assert len(left_running) <= workers  # what was interrupted is left for the rerun to retry

    monkeypatch.setattr("correctsweep.trial.run_trial", search_only(tmp_path, workers))
    capsys.readouterr()
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", f"storage={tmp_path}"]) == 0
    assert "finished 10" in capsys.readouterr().out
    assert sum(t.state in FINISHED for t in trials(tmp_path)) == 10
