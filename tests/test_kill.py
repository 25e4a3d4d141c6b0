"""SIGKILL in the middle of each stage, then a rerun: the result equals an uninterrupted run's, no
finished stage runs again, and no temporary file is left behind. The kill is real (a `correctsweep trial`
process); the rerun and the uninterrupted reference run here, through the same entry point."""
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import TINY, sets

from correctsweep.cli import main

# the tiny run's spec, two epochs (a kill after the first lands inside training) and four candidates
SETTINGS = ["base_net.epochs=2", "corrector.n_candidates=4"]


def argv(spec, storage) -> list[str]:
    return ["trial", str(spec), "--fold", "3", *sets(f"storage={storage}", *SETTINGS)]


def killed_trial(spec, storage, kill_after: str) -> None:
    """Run `correctsweep trial` in a process of its own and SIGKILL it as soon as a line contains `kill_after`."""
    cmd = [sys.executable, "-u", "-m", "correctsweep.cli", *argv(spec, storage)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if kill_after in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=600)
    text = "".join(out)
    assert proc.returncode == -signal.SIGKILL, f"the trial ended before '{kill_after}':\n{text[-2000:]}"


def trial(spec, storage, capsys) -> str:
    """Run `correctsweep trial` here; its output."""
    capsys.readouterr()
    assert main(argv(spec, storage)) == 0
    return capsys.readouterr().out


def result(storage) -> dict:
    r = json.loads((storage / TINY["name"] / "results" / "fold=3" / "seed=0.json").read_text())
    return {k: r[k] for k in ("summary", "per_class", "net_key", "features_key")} | {
        "corrector": {k: r["corrector"][k] for k in ("policy", "tau", "taps", "cv_score", "n_candidates")}}


@pytest.fixture(scope="module")
def uninterrupted(tiny_spec, tmp_path_factory):
    storage = tmp_path_factory.mktemp("whole")
    assert main(argv(tiny_spec, storage)) == 0
    return result(storage)


@pytest.mark.slow
@pytest.mark.parametrize("stage, kill_after, must_not_rerun", [
    ("training", "  epoch 1:", []),
    ("extraction", "split=correct", ["training base net"]),
    ("corrector search", "Trial 1 finished", ["training base net", "wrote"]),
])
def test_killed_stage_resumes_to_the_same_result(tiny_spec, tmp_path, capsys, uninterrupted, stage, kill_after,
                                                  must_not_rerun):
    killed_trial(tiny_spec, tmp_path, kill_after)
    rerun = trial(tiny_spec, tmp_path, capsys)
    for text in must_not_rerun:
        assert text not in rerun, f"killed in {stage}, the rerun redid a finished stage: {text}"
    assert result(tmp_path) == uninterrupted
    assert not [p for p in tmp_path.rglob(".tmp-*")], "a temporary file was left behind"


def test_killed_collector_leaves_the_old_report_and_no_temporary_folder(tiny_run, tiny_copy):
    run = tiny_copy
    report = (tiny_run / "report" / "report.md").read_text().replace(str(tiny_run), str(run))  # as the sweep wrote it
    # what a collector killed while writing leaves: its temporary folder beside the report
    stale = run / ".tmp-report-deadbeef"
    stale.mkdir()
    (stale / "report.md").write_text("half")
    assert main(["collect", str(run)]) == 0
    assert (run / "report" / "report.md").read_text() == report
    assert not [p for p in run.rglob(".tmp-*")]
