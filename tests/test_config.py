import re

import pytest

from correctsweep.config import load_spec, spec_from_dict
from correctsweep.errors import SpecError


def test_defaults_reproduce_published_net():
    spec = spec_from_dict({})
    assert spec.base_net.heads == 4 and spec.base_net.dropout == 0.5 and spec.data.image_size == 100
    assert spec.folds == ["all", "none"]


def test_override_nested_key_and_type():
    spec = spec_from_dict({"data": {"source": "parquet", "path": "a"}}, ["data.path=/x", "base_net.lr=0.01"])
    assert spec.data.path == "/x" and spec.base_net.lr == 0.01


@pytest.mark.parametrize("raw, overrides, key", [
    ({"data": {"sorce": "x"}}, [], "data.sorce"),
    ({}, ["base_net.heads=3"], "base_net.heads"),
    ({}, ["data.train_fraction=0.8", "data.correct_fraction=0.3"], "data.correct_fraction"),
    ({}, ["corrector.objective=accuracy"], "corrector.objective"),
    ({}, ["base_net.epochs=many"], "base_net.epochs"),
    ({}, ["base_net.epochs=5", "base_net.min_epochs=6"], "base_net.min_epochs"),
    ({"data": {"source": "parquet"}}, [], "data.path"),
])
def test_bad_values_name_the_key(raw, overrides, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        spec_from_dict(raw, overrides)


@pytest.mark.parametrize("name", ["default", "smoke", "ferplus", "ckplus48"])
def test_shipped_specs_parse(name):
    load_spec(f"sweeps/{name}.yaml")


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("raw, overrides, old, new", [
    ({"data": {"size": 500}}, [], "data.size", "data.n_images"),
    ({}, ["base_net.smoothing=3"], "base_net.smoothing", "base_net.val_window"),
])
def test_renamed_keys_name_the_new_one(raw, overrides, old, new):
    with pytest.raises(SpecError, match=f"'{old}' is now called '{new}'"):
        spec_from_dict(raw, overrides)


@pytest.mark.parametrize("value, ok", [("null", True), ("16", True), ("[null, 32, 64]", True), ("0", False),
                                       ("[]", False), ("[8, x]", False), ("true", False)])
def test_pca_dims_values(value, ok):
    if ok:
        spec_from_dict({}, [f"corrector.pca_dims={value}"])
    else:
        with pytest.raises(SpecError, match="corrector.pca_dims"):
            spec_from_dict({}, [f"corrector.pca_dims={value}"])


@pytest.mark.parametrize("overrides, key", [
    (["corrector.kind=forest"], "corrector.kind"),
    (["corrector.kinds=[xgboost, svm]"], "corrector.kinds"),
    (["corrector.kinds=[fisher, fisher]"], "corrector.kinds"),
    (["corrector.kinds=[fisher, logistic]"], "corrector.kinds"),  # leaves out corrector.kind (xgboost)
    (["corrector.whiten_dims=0"], "corrector.whiten_dims"),
    (["corrector.whiten_dims=[16, null]"], "corrector.whiten_dims"),
    (["baselines=[msp, odin]"], "baselines"),
])
def test_kinds_and_baselines_name_the_key(overrides, key):
    with pytest.raises(SpecError, match="'" + re.escape(key) + "'"):
        spec_from_dict({}, overrides)


def test_kind_alone_or_in_a_list():
    assert spec_from_dict({}, ["corrector.kind=fisher"]).corrector.all_kinds == ["fisher"]
    spec = spec_from_dict({}, ["corrector.kinds=[xgboost, fisher, logistic]", "baselines=[msp, energy, knn]"])
    assert spec.corrector.all_kinds == ["xgboost", "fisher", "logistic"] and spec.corrector.kind == "xgboost"
    assert spec_from_dict({}, ["corrector.kind=logistic", "corrector.kinds=[fisher, logistic]"]).corrector.kind == \
        "logistic"
    assert spec_from_dict({}).corrector.all_kinds == ["xgboost"] and spec_from_dict({}).baselines == []


def test_a_run_directory_spec_from_before_a_rename_still_loads(tmp_path):
    # a spec.yaml the tool wrote itself before data.size became data.n_images
    (tmp_path / "spec.yaml").write_text("name: old\nstorage: outputs\ndata:\n  size: 300\nfolds: [none]\nseeds: [0]\n"
                                        "base_net:\n  smoothing: 2\nfeatures: {}\ncorrector: {}\nresources: {}\n")
    spec = load_spec(tmp_path / "spec.yaml", stored=True)
    assert spec.data.n_images == 300 and spec.base_net.val_window == 2
    with pytest.raises(SpecError, match="now called"):
        load_spec(tmp_path / "spec.yaml")


def test_precision_is_checked_and_the_old_amp_key_names_its_replacement():
    with pytest.raises(SpecError, match="'base_net.amp' is replaced by 'base_net.precision'"):
        load_spec("sweeps/smoke.yaml", ["base_net.amp=false"])
    with pytest.raises(SpecError, match="base_net.precision.*auto, fp32 or bf16"):
        load_spec("sweeps/smoke.yaml", ["base_net.precision=fp16"])
    assert load_spec("sweeps/smoke.yaml", ["base_net.precision=bf16"]).base_net.precision == "bf16"
