"""Every stage key holds everything that determines its stage's output (or the field is listed as
changing no output in keys.NOT_IN_KEYS): a rerun with a changed spec must never reuse a stale stage.
Plug-ins' settings are walked too: a kind's own settings key its search alone."""
import copy
import dataclasses

import pytest

from correctsweep.config import Spec, load_spec, spec_from_dict
from correctsweep.config.schema import plugin_field
from correctsweep.keys import NOT_IN_KEYS, corrector_key, features_key, net_key
from correctsweep.policy import policies_for

KINDS = ["xgboost", "fisher", "logistic"]


def leaves(obj, prefix=""):
    """(dotted path, value) of every spec field, a plug-in's settings under its name."""
    plugins = plugin_field(type(obj))
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        if plugins and f.name == plugins[0]:
            for name, settings in value.items():
                yield from leaves(settings, f"{prefix}{name}.")
        elif dataclasses.is_dataclass(value):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def section(obj, name):
    """A nested section, or a plug-in's settings by the plug-in's name."""
    plugins = plugin_field(type(obj))
    return obj.settings[name] if plugins and name in obj.settings else getattr(obj, name)


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
    out = {"net": net, "features": feat}
    for kind in KINDS:
        cfg = dataclasses.replace(spec.corrector, kind=kind, policies=policies_for(spec.corrector.policies, 3))
        out[f"corrector:{kind}"] = corrector_key(cfg, feat)
    return out


CORRECTORS = {f"corrector:{kind}" for kind in KINDS}


def expected(path: str) -> set:
    if path in NOT_IN_KEYS or path.split(".")[0] in NOT_IN_KEYS:
        return set()
    if path == "data.path":  # the smoke spec's source is synthetic; a file source's path counts through its
        return set()          # resolved form and files (test_a_relative_and_an_absolute_data_path_share_one_net)
    stage, second = path.split(".")[:2]
    if stage in ("data", "base_net"):
        return {"net", "features"} | CORRECTORS
    if stage == "features":
        return {"features"} | CORRECTORS
    if stage == "corrector":
        return {f"corrector:{second}"} if second in KINDS else CORRECTORS
    raise AssertionError(f"spec field {path} is in no stage: add it to a key or to NOT_IN_KEYS")


SPEC = load_spec("sweeps/smoke.yaml", [f"corrector.kinds=[{', '.join(KINDS)}]", "detectors.names=[knn]"])


@pytest.mark.parametrize("path, value", list(leaves(SPEC)))
def test_each_spec_field_changes_exactly_the_keys_it_determines(path, value):
    other = copy.deepcopy(SPEC)
    *parents, name = path.split(".")
    node = other
    for p in parents:
        node = section(node, p)
    setattr(node, name, changed(value))
    if path == "data.source":  # a file source needs a path for its dataset key; both are data fields
        other.data.source, other.data.path = "parquet", "/nonexistent/data"
    before, after = keys(SPEC), keys(other)
    assert {k for k in before if before[k] != after[k]} == expected(path)


def test_not_in_keys_names_real_fields():
    paths = {p for p, _ in leaves(SPEC)}
    assert all(p in paths or any(q.startswith(p + ".") for q in paths) for p in NOT_IN_KEYS)


def test_every_kind_and_a_detector_with_settings_are_walked():
    paths = {p for p, _ in leaves(SPEC)}
    assert {"corrector.xgboost.max_rounds", "corrector.fisher.whiten_dims", "corrector.logistic.whiten_dims",
            "detectors.knn.k", "data.synthetic.n_images", "base_net.paper.heads"} <= paths


def test_a_relative_and_an_absolute_data_path_share_one_net(tmp_path, monkeypatch):
    from pathlib import Path

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


def test_a_net_trained_before_the_recipe_options_existed_keeps_its_key():
    # the key main (cbce013) gave this net; the recipe options at their defaults train it bit for bit alike
    spec = spec_from_dict({"data": {"synthetic": {"n_images": 500}, "image_size": 24}, "base_net": {"epochs": 3}})
    assert net_key(spec, "3", 0) == "08bf0ddf1949"
    spec.base_net.ema_decay = 0.999
    assert net_key(spec, "3", 0) != "08bf0ddf1949"
