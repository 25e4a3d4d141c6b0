"""The tiny run's sweep (conftest's spec) as a Ray job on a real two-node Ray cluster on this machine.

What a user does on a cluster, scaled down: `ray start --head`, a second node joins it with
`ray start --address`, `ray job submit --working-dir` runs `correctsweep sweep --address auto` on it.
One CPU per node and one CPU per trial: the tiny spec's two trials (folds 3 and none) run at the
same time, so Ray has to place them on different nodes. It starts its Ray on purpose: the test session's
shared Ray (conftest) is another instance on the machine, from which it is isolated as below.

Isolation from other Ray instances on the machine (other tests' `ray.init()`, other users):
* every port is chosen free by the test (Ray's fixed defaults, 6379, 8265, 10001, 52365, would
  collide with another Ray head or between the two nodes on one host);
* each node has its own `--temp-dir`, so the cluster does not write /tmp/ray/ray_current_cluster,
  which a plain `ray.init()` elsewhere would then join;
* token authentication is on, with a token made for this test and given to every process of the
  test through RAY_AUTH_MODE/RAY_AUTH_TOKEN. Without that, Ray 2.60's `ray start --head` turns token
  auth on whenever ~/.ray/auth_token exists (any earlier local `ray.init()` creates it) while the
  joining `ray start --address` does not, and the join fails with "InvalidAuthToken";
* teardown is `ray stop --force` (SIGKILL) scoped to this cluster, which `ray stop` itself cannot
  be: it kills every Ray process of the user on the machine, other clusters included. Each
  `ray start` runs in a session of its own, its daemons (GCS, raylet, dashboard, agents) keep that
  process group, and the raylets' workers (trials, the job's supervisor and driver, which Ray puts
  in process groups of their own) are their descendants; the test kills those, and checks that
  none survives.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY

REPO = Path(__file__).resolve().parents[1]
FOLDS = {str(f) for f in TINY["folds"]}  # one seed (0)


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free now (all held open together, so no two are the same)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, command line) of every process visible in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), int(fields[2]), cmd)
    return table


def _ancestors(table: dict[int, tuple[int, int, str]]) -> set[int]:
    pids, pid = {1}, os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        pid = table[pid][0] if pid in table else 1
    return pids


def cluster_processes(groups: set[int], *markers: str) -> dict[int, str]:
    """The cluster's live processes: members of the nodes' process groups, processes whose command
    line names one of the markers (the cluster's temp dir; the job's storage, which the driver's
    command line names, should it outlive its parents), and every descendant of those (workers have
    process groups of their own, the job's driver a session of its own). Never this process, its
    ancestors or init; markers must be specific paths (at least /dir/subdir)."""
    for m in markers:
        if not isinstance(m, str) or not Path(m).is_absolute() or len(Path(m).parts) < 3:
            raise ValueError(f"refusing to match processes by {m!r}: not a specific absolute path")
    groups = {g for g in groups if g > 1} - {os.getpgrp()}
    patterns = [re.compile(re.escape(m) + r"(?![^/\s])") for m in markers]  # the path itself or below it
    table = _processes()
    found = {pid for pid, (_, pgid, cmd) in table.items() if pgid in groups or any(p.search(cmd) for p in patterns)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    found -= _ancestors(table)
    if len(found) > 200:  # a two-node cluster has about 40 processes: something matched too widely
        raise RuntimeError(f"refusing to kill {len(found)} processes as the test cluster's")
    return {pid: table[pid][2] for pid in found}


def kill_cluster(groups: set[int], *markers: str, timeout: float = 60) -> dict[int, str]:
    """`ray stop --force` for this cluster only: SIGKILL its processes until none is left; returns
    the survivors (none unless the kernel could not kill them within the timeout)."""
    deadline = time.time() + timeout
    while (procs := cluster_processes(groups, *markers)) and time.time() < deadline:
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    return procs


class RayCluster:
    def __init__(self, root: Path):
        self.root = root
        self.port, self.dashboard_port, self.client_port = free_ports(3)
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                     "RAY_USAGE_STATS_ENABLED": "0"}
        self.groups: set[int] = set()

    def start_node(self, name: str, *args):
        # Ports of a node's own servers: random (0) or chosen free here, never Ray's fixed defaults.
        node_manager, object_manager = free_ports(2)
        ports = [f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
                 "--min-worker-port=0", "--max-worker-port=0", "--dashboard-agent-listen-port=0"]
        cmd = ["start", *args, "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={self.root / name}", *ports]
        # A session of its own: the node's daemons stay in the process group `ray start` leads.
        popen = subprocess.Popen(["ray", *cmd], env=self.env, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.groups.add(popen.pid)
        try:
            out, _ = popen.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            popen.kill()
            out, _ = popen.communicate()
        if popen.returncode != 0:
            raise AssertionError(f"ray {' '.join(cmd)} failed ({popen.returncode}):\n{out[-4000:]}")

    def start(self):
        self.start_node("head", "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
                        "--include-dashboard=true", f"--ray-client-server-port={self.client_port}")
        self.start_node("worker", f"--address={self.address}")
        # `ray start` returns before the dashboard (the Jobs API) is sure to answer.
        waited = self.jobs_api("attempt")
        print(f"cluster up: head {self.address}, dashboard {self.dashboard} (answered after {waited} retries)")

    def jobs_api(self, expression: str):
        """Evaluate `expression` with `client`, a JobSubmissionClient of the cluster, in a separate
        process; retried while the dashboard does not answer (it can lag on a loaded machine)."""
        return self.python("import json, time; from ray.job_submission import JobSubmissionClient\n"
                           "for attempt in range(120):\n"
                           "    try:\n        client = JobSubmissionClient(%r); break\n"
                           "    except ConnectionError:\n        time.sleep(1)\n"
                           "else:\n    raise SystemExit('the dashboard never answered')\n"
                           "print(json.dumps(%s))" % (self.dashboard, expression), timeout=180)

    def logs(self, name: str = "dashboard.log") -> str:
        """The tail of one of the head's logs, for failure messages."""
        path = self.root / "head" / "session_latest" / "logs" / name
        return f"--- {path} ---\n" + (path.read_text(errors="replace")[-4000:] if path.is_file() else "(missing)")

    def python(self, code: str, timeout: float = 120):
        """Run Python code against the cluster in a separate process (this one stays Ray-free); its
        last line of output, as JSON."""
        proc = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{self.logs()}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def node_ids(self) -> set[str]:
        return set(self.python("import json, ray; ray.init(address=%r, logging_level='ERROR');"
                               "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % self.address))

    def job_status(self, job_id: str) -> str:
        return self.jobs_api("client.get_job_status(%r).value" % job_id)


@pytest.fixture
def ray_cluster(tmp_path):
    if shutil.which("ray") is None:
        pytest.skip("the `ray` CLI is not installed (pip install 'ray[default]')")
    # Short: Ray's Unix sockets live under the temp dir, and socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="csray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = RayCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        survivors = kill_cluster(cluster.groups, str(root), str(tmp_path))
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"Ray processes of the test cluster survived teardown: {survivors}"


@pytest.mark.slow
def test_sweep_as_ray_job_on_two_node_cluster(ray_cluster, tiny_spec, tmp_path):
    nodes = ray_cluster.node_ids()
    assert len(nodes) == 2, f"expected the head and the joined node, got {nodes}"

    job_id = f"correctsweep-test-{secrets.token_hex(4)}"
    sets = [f"storage={tmp_path}", "resources.cpus_per_trial=1", "base_net.threads=1", "corrector.threads=1"]
    submit = ["ray", "job", "submit", "--address", ray_cluster.dashboard, "--working-dir", str(REPO),
              "--submission-id", job_id, "--", "correctsweep", "sweep", str(tiny_spec), "--address", "auto",
              *(arg for s in sets for arg in ("--set", s))]
    try:  # `ray job submit` waits for the job and streams its output
        done = subprocess.run(submit, env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"the job did not finish in {e.timeout} s:\n{out[-6000:]}\n{ray_cluster.logs()}")
    log = f"job output:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}\n{ray_cluster.logs()}"
    assert ray_cluster.job_status(job_id) == "SUCCEEDED", log
    assert done.returncode == 0, log

    run = tmp_path / TINY["name"]
    assert {p.parent.name.split("=", 1)[1] for p in run.glob("results/fold=*/seed=0.json")} == FOLDS
    report = (run / "report" / "report.md").read_text()
    # a fold's cell reads "3 Disgust" where the dataset names its classes, "none" for the full model
    rows = {(cells[1].split(" ")[0], cells[2]) for line in report.splitlines() if line.startswith("|")
            for cells in [[c.strip() for c in line.split("|")]] if cells[1]}
    assert {(fold, "0") for fold in FOLDS} <= rows, "report.md lacks a row per fold x seed"
    assert yaml.safe_load((run / "best" / "best_config.yaml").read_text())

    finals = [row for path in run.glob("tune-*/*/result.json") for row in map(json.loads, path.read_text().splitlines())
              if row.get("stage") == "done"]
    assert len(finals) == 2, finals
    used = {row["node"] for row in finals}
    assert used == nodes, f"trials ran on {used}, the cluster's nodes are {nodes}"
