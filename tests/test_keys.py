"""Every stage key holds everything that determines its stage's output (or the field is listed as
changing no output in trial.NOT_IN_KEYS): a rerun with a changed spec must never reuse a stale stage."""
import copy
import dataclasses

import pytest

from correctsweep.config import Spec, load_spec
from correctsweep.policy import policies_for
from correctsweep.trial import NOT_IN_KEYS, corrector_key, features_key, net_key


def leaves(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def changed(value):
    """A different value of the same kind (validity does not matter: keys are computed, not run)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else value + [value[0] if value else 1]
    if isinstance(value, dict):
        return value | {"x": 1}
    return 8  # None: an optional number (pca_dims, timeout_s, max_per_class, ...)


def keys(spec: Spec) -> dict:
    net = net_key(spec, "3", 0)
    feat = features_key(spec, net, spec.features.taps or ["the net's defaults"])
    cfg = dataclasses.replace(spec.corrector, policies=policies_for(spec.corrector.policies, 3))
    return {"net": net, "features": feat, "corrector": corrector_key(cfg, feat)}


def expected(path: str) -> set:
    if path in NOT_IN_KEYS or path.split(".")[0] in NOT_IN_KEYS:
        return set()
    if path == "data.path":  # the smoke spec's source is synthetic; a file source's path counts through its
        return set()          # resolved form and files (test_a_relative_and_an_absolute_data_path_share_one_net)
    stage = path.split(".")[0]
    if stage in ("data", "base_net"):
        return {"net", "features", "corrector"}
    if stage == "features":
        return {"features", "corrector"}
    if stage == "corrector":
        return {"corrector"}
    raise AssertionError(f"spec field {path} is in no stage: add it to a key or to NOT_IN_KEYS")


SPEC = load_spec("sweeps/smoke.yaml")


@pytest.mark.parametrize("path, value", list(leaves(SPEC)))
def test_each_spec_field_changes_exactly_the_keys_it_determines(path, value):
    other = copy.deepcopy(SPEC)
    *parents, name = path.split(".")
    node = other
    for p in parents:
        node = getattr(node, p)
    setattr(node, name, changed(value))
    if path == "data.source":  # a file source needs a path for its dataset key; both are data fields
        other.data.source, other.data.path = "parquet", "/nonexistent/data"
    before, after = keys(SPEC), keys(other)
    assert {k for k in before if before[k] != after[k]} == expected(path)


def test_not_in_keys_names_real_fields():
    paths = {p for p, _ in leaves(SPEC)}
    assert all(p in paths or any(q.startswith(p + ".") for q in paths) for p in NOT_IN_KEYS)


def test_a_relative_and_an_absolute_data_path_share_one_net(tmp_path, monkeypatch):
    from pathlib import Path

    from correctsweep.config import load_spec
    from correctsweep.trial import net_key

    spec_file = str(Path(__file__).parents[1] / "sweeps" / "ferplus.yaml")
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.parquet").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    key = lambda path: net_key(load_spec(spec_file, [f"data.path={path}"]), "3", 0)
    before = key("data")
    assert before == key(str(data))  # a sweep resolves the path, `correctsweep trial` keeps it as written
    (data / "part-1.parquet").write_bytes(b"y")
    assert key("data") != before  # the files still count
