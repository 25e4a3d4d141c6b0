"""SIGKILL in the middle of each stage, then a rerun: the result equals an uninterrupted run's, no
finished stage runs again, and no temporary file is left behind."""
import json
import os
import signal
import subprocess
import sys

import pytest

ARGS = ["sweeps/smoke.yaml", "--fold", "3", "--set", "corrector.n_candidates=4"]


def trial(storage, kill_after: str | None = None) -> str:
    """Run `correctsweep trial`; with `kill_after`, SIGKILL it as soon as a line contains that text."""
    cmd = [sys.executable, "-u", "-m", "correctsweep.cli", "trial", *ARGS, "--set", f"storage={storage}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if kill_after and kill_after in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=600)
    text = "".join(out)
    if kill_after:
        assert proc.returncode == -signal.SIGKILL, f"the trial ended before '{kill_after}':\n{text[-2000:]}"
    else:
        assert proc.returncode == 0, text[-2000:]
    return text


def result(storage) -> dict:
    r = json.loads((storage / "smoke" / "results" / "fold=3" / "seed=0.json").read_text())
    return {k: r[k] for k in ("summary", "per_class", "net_key", "features_key")} | {
        "corrector": {k: r["corrector"][k] for k in ("policy", "tau", "taps", "cv_score", "n_candidates")}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    storage = tmp_path_factory.mktemp("whole")
    trial(storage)
    return result(storage)


@pytest.mark.slow
@pytest.mark.parametrize("stage, kill_after, must_not_rerun", [
    ("training", "  epoch 1:", []),
    ("extraction", "split=correct", ["training base net"]),
    ("corrector search", "Trial 1 finished", ["training base net", "wrote"]),
])
def test_killed_stage_resumes_to_the_same_result(tmp_path, uninterrupted, stage, kill_after, must_not_rerun):
    trial(tmp_path, kill_after)
    rerun = trial(tmp_path)
    for text in must_not_rerun:
        assert text not in rerun, f"killed in {stage}, the rerun redid a finished stage: {text}"
    assert result(tmp_path) == uninterrupted
    assert not [p for p in tmp_path.rglob(".tmp-*")], "a temporary file was left behind"


@pytest.mark.slow
def test_killed_collector_leaves_the_old_report_and_no_temporary_folder(tmp_path):
    from correctsweep.cli import main

    trial(tmp_path)
    run = tmp_path / "smoke"
    assert main(["collect", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    # what a collector killed while writing leaves: its temporary folder beside the report
    stale = run / ".tmp-report-deadbeef"
    stale.mkdir()
    (stale / "report.md").write_text("half")
    assert main(["collect", str(run)]) == 0
    assert (run / "report" / "report.md").read_text() == report
    assert not [p for p in run.rglob(".tmp-*")]
