"""The files under cluster/: Ray cluster-launcher configs, the cluster sweep spec and submit_sweep.py.

Launcher configs are checked the way `ray up` checks them, with the installed Ray's own code:
`ray.autoscaler._private.commands._bootstrap_config` runs `prepare_config` (merge the provider's
defaults.yaml, merge setup commands, fill per-type worker bounds; for the `local` provider first
`prepare_local`) and then `validate_config` (jsonschema against ray/autoscaler/ray-schema.json,
plus the checks on head_node_type, cluster_synced_files and the min_workers sum). The step between
them, the provider's `fillout_available_node_types_resources` (it asks the AWS API for instance
sizes) and the provider bootstrap after them (IAM roles, key pairs, networks) need cloud access and
are not run here.
"""

from __future__ import annotations

import copy
import os
import runpy
import sys
import types
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

from correctsweep.config import load_spec
from correctsweep.errors import SpecError

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
SPEC = CLUSTER / "sweep-cluster.yaml"
SUBMIT = CLUSTER / "submit_sweep.py"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


LAUNCHER_CONFIGS = sorted(p for p in CLUSTER.glob("*.yaml") if "provider" in (_load(p) or {}))
CLOUD_CONFIGS = [p for p in LAUNCHER_CONFIGS if _load(p)["provider"]["type"] != "local"]


def ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a config before touching any machine, minus the cloud calls."""
    assert config["provider"]["type"] in _NODE_PROVIDERS, f"unknown provider {config['provider']['type']}"
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _ids(paths):
    return [p.name for p in paths]


def test_cluster_directory_has_the_expected_configs():
    names = {p.name for p in LAUNCHER_CONFIGS}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"} <= names
    assert SPEC.name not in names, "the sweep spec must not look like a launcher config"


# ------------------------------------------------------------------ valid as shipped


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=_ids(LAUNCHER_CONFIGS))
def test_launcher_config_passes_rays_validation(path):
    prepared = ray_up_checks(_load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=_ids(LAUNCHER_CONFIGS))
def test_launcher_config_installs_this_project_and_this_ray(path):
    config = _load(path)
    assert config["file_mounts"].get("~/correctsweep") == ".", "the repository must be synced to ~/correctsweep"
    commands = config["setup_commands"]
    assert "pip install -e ~/correctsweep" in commands
    # The cluster must run the Ray that runs `ray up` here; a bump of the installed Ray must be
    # carried into the configs.
    assert f'pip install "ray[default,tune]=={ray.__version__}"' in commands


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=_ids(CLOUD_CONFIGS))
def test_cloud_gpu_workers_can_host_a_trial_of_the_cluster_spec(path):
    """Each GPU worker type offers at least one trial's CPUs and GPU share; otherwise the trials
    would stay pending as infeasible and the autoscaler would never start that type."""
    resources = load_spec(SPEC).resources
    config = _load(path)
    # vCPUs and GPUs of the AWS instance types the config and its comments mention (AWS fills
    # `resources: {}` from the EC2 API at `ray up`, which is not reachable here).
    aws_sizes = {"g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1)}
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        declared = node_type["resources"]
        if "GPU" in declared:
            cpus, gpus = declared["CPU"], declared["GPU"]
        else:
            instance = node_type["node_config"]["InstanceType"]
            if instance not in aws_sizes:
                pytest.skip(f"size of {instance} not known to this test")
            cpus, gpus = aws_sizes[instance]
        assert cpus >= resources.cpus_per_trial, name
        assert gpus >= resources.gpus_per_trial, name


def test_gcp_gpu_workers_terminate_on_host_maintenance():
    """GCE refuses GPU VMs that may live-migrate; `scheduling` is a mapping in the Compute API."""
    config = _load(CLUSTER / "gcp-gpu.yaml")
    gpu_types = [t for t in config["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu_types
    for node_type in gpu_types:
        node = node_type["node_config"]
        assert node.get("guestAccelerators") or node["machineType"].startswith(("g2-", "a2-", "a3-"))
        assert isinstance(node["scheduling"], dict)
        assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"


# ------------------------------------------------------------------ broken copies must fail


# Each break edits a config in place and returns a piece of the error message it must cause.


def _misspell_top_level_key(c):
    c["max_worker"] = c.pop("max_workers", 2)
    return "'max_worker' was unexpected"


def _wrong_type(c):
    c["idle_timeout_minutes"] = "ten"
    return "'ten' is not of type 'number'"


def _commands_not_a_list(c):
    c["head_start_ray_commands"] = "ray start --head"
    return "is not of type 'array'"


def _unknown_auth_key(c):
    c["auth"]["ssh_key"] = "~/.ssh/id_rsa"
    return "'ssh_key' was unexpected"


TOP_LEVEL_BREAKS = [_misspell_top_level_key, _wrong_type, _commands_not_a_list, _unknown_auth_key]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=_ids(LAUNCHER_CONFIGS))
@pytest.mark.parametrize("breaks", TOP_LEVEL_BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_broken_copy_fails_validation(path, breaks):
    config = _load(path)
    message = breaks(config)
    with pytest.raises(jsonschema.ValidationError) as error:
        ray_up_checks(config)
    assert message in error.value.message


def _worker(c):
    return next(t for name, t in c["available_node_types"].items() if name != c["head_node_type"])


def _fractional_gpu_resource(c):
    _worker(c)["resources"] = {"CPU": 16, "GPU": 0.5}  # node resources are whole numbers
    return "0.5 is not of type 'integer'"


def _misspelled_node_type_key(c):
    _worker(c)["min_worker"] = _worker(c).pop("min_workers", 0)
    return "'min_worker' was unexpected"


def _missing_node_config(c):
    del _worker(c)["node_config"]
    return "'node_config' is a required property"


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=_ids(CLOUD_CONFIGS))
@pytest.mark.parametrize("breaks", [_fractional_gpu_resource, _misspelled_node_type_key, _missing_node_config],
                         ids=lambda f: f.__name__.strip("_"))
def test_broken_node_type_fails_validation(path, breaks):
    config = _load(path)
    message = breaks(config)
    with pytest.raises(jsonschema.ValidationError) as error:
        ray_up_checks(config)
    assert message in error.value.message


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=_ids(CLOUD_CONFIGS))
def test_undefined_head_node_type_fails_validation(path):
    config = _load(path)
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_up_checks(config)


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=_ids(CLOUD_CONFIGS))
def test_min_workers_above_max_workers_fails_validation(path):
    config = _load(path)
    _worker(config)["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_up_checks(config)


# ------------------------------------------------------------------ the sweep spec


def test_cluster_spec_uses_only_known_keys_and_valid_values():
    spec = load_spec(SPEC)  # raises SpecError on an unknown key or an impossible value
    assert 0 < spec.resources.gpus_per_trial < 1, "the cluster spec shares each GPU between trials"
    assert spec.base_net.device == "cuda" and spec.corrector.device == "cuda"
    # Trials run on other machines and in other directories than the driver.
    assert Path(spec.data.path).is_absolute()
    assert "://" in spec.storage or Path(spec.storage).is_absolute()
    assert spec.data.cache_dir and Path(spec.data.cache_dir).is_absolute()


@pytest.mark.parametrize("override", ["storage=gs://YOUR-BUCKET/correctsweep", "storage=/mnt/shared/correctsweep",
                                      "data.source=synthetic", "base_net.precision=fp32"])
def test_cluster_spec_takes_the_documented_overrides(override):
    load_spec(SPEC, [override])


def test_broken_cluster_spec_fails(tmp_path):
    raw = _load(SPEC)
    raw["resources"]["gpu_per_trial"] = raw["resources"].pop("gpus_per_trial")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="gpu_per_trial"):
        load_spec(broken)


# ------------------------------------------------------------------ submit_sweep.py


def test_submit_sweep_forwards_argv_with_address_auto(tmp_path, monkeypatch):
    calls = []
    fake_cli = types.ModuleType("correctsweep.cli")
    fake_cli.main = lambda argv=None: calls.append((list(argv), os.getcwd())) or 3
    monkeypatch.setitem(sys.modules, "correctsweep.cli", fake_cli)
    monkeypatch.chdir(tmp_path)  # restores the cwd after the test
    project = tmp_path / "correctsweep"
    project.mkdir()
    monkeypatch.setenv("CORRECTSWEEP_DIR", str(project))
    args = ["cluster/sweep-cluster.yaml", "--set", "storage=s3://b/p", "--resume"]
    monkeypatch.setattr(sys, "argv", ["submit_sweep.py", *args])

    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SUBMIT), run_name="__main__")

    assert exit_info.value.code == 3  # main's return value is the exit status
    assert calls == [(["sweep", *args, "--address", "auto"], str(project))]


def test_submit_sweep_keeps_an_explicit_address(monkeypatch):
    fake_cli = types.ModuleType("correctsweep.cli")
    fake_cli.main = lambda argv=None: 0
    monkeypatch.setitem(sys.modules, "correctsweep.cli", fake_cli)
    sweep_argv = runpy.run_path(str(SUBMIT))["sweep_argv"]
    assert sweep_argv(["s.yaml", "--address", "ray://h:10001"]) == ["sweep", "s.yaml", "--address", "ray://h:10001"]
    assert sweep_argv(["s.yaml", "--address=auto"]) == ["sweep", "s.yaml", "--address=auto"]
    assert sweep_argv(["s.yaml"]) == ["sweep", "s.yaml", "--address", "auto"]
