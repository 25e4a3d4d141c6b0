import re

import pytest

from correctsweep.config import load_spec, spec_from_dict
from correctsweep.errors import SpecError


def test_defaults_reproduce_published_net():
    spec = spec_from_dict({})
    paper = spec.base_net.settings["paper"]
    assert paper.heads == 4 and paper.dropout == 0.5 and spec.data.image_size == 100
    assert spec.folds == ["all", "none"]


def test_override_nested_key_and_type():
    spec = spec_from_dict({"data": {"source": "parquet", "path": "a"}}, ["data.path=/x", "base_net.lr=0.01"])
    assert spec.data.path == "/x" and spec.base_net.lr == 0.01


@pytest.mark.parametrize("raw, overrides, key", [
    ({"data": {"sorce": "x"}}, [], "data.sorce"),
    ({}, ["base_net.paper.heads=3"], "base_net.paper.heads"),
    ({}, ["base_net.paper.dropout=1"], "base_net.paper.dropout"),
    ({}, ["data.synthetic.n_images=10"], "data.synthetic.n_images"),
    ({}, ["detectors.knn.k=0"], "detectors.knn.k"),
    ({}, ["data.train_fraction=0.8", "data.correct_fraction=0.3"], "data.correct_fraction"),
    ({}, ["corrector.objective=accuracy"], "corrector.objective"),
    ({}, ["base_net.epochs=many"], "base_net.epochs"),
    ({}, ["base_net.epochs=5", "base_net.min_epochs=6"], "base_net.min_epochs"),
    ({"data": {"source": "parquet"}}, [], "data.path"),
])
def test_bad_values_name_the_key(raw, overrides, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        spec_from_dict(raw, overrides)


@pytest.mark.parametrize("name", ["default", "smoke", "ferplus", "ckplus48", "ferplus-recipe"])
def test_shipped_specs_parse(name):
    load_spec(f"sweeps/{name}.yaml")


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override, new", [
    ("data.n_images=500", "data.synthetic.n_images"),
    ("corrector.pca_dims=16", "corrector.xgboost.pca_dims"),
    ("corrector.max_rounds=10", "corrector.xgboost.max_rounds"),
    ("corrector.whiten_dims=8", "corrector.fisher.whiten_dims"),
    ("base_net.heads=2", "base_net.paper.heads"),
    ("detectors.k=5", "detectors.knn.k"),
])
def test_a_plugin_setting_in_its_section_s_place_names_where_it_lives(override, new):
    with pytest.raises(SpecError, match=f"unknown key '{override.split('=')[0]}'.*{re.escape(new)}"):
        spec_from_dict({}, [override])


@pytest.mark.parametrize("value, ok", [("null", True), ("16", True), ("[null, 32, 64]", True), ("0", False),
                                       ("[]", False), ("[8, x]", False), ("true", False)])
def test_pca_dims_values(value, ok):
    if ok:
        spec_from_dict({}, [f"corrector.xgboost.pca_dims={value}"])
    else:
        with pytest.raises(SpecError, match=r"corrector\.xgboost\.pca_dims"):
            spec_from_dict({}, [f"corrector.xgboost.pca_dims={value}"])


@pytest.mark.parametrize("overrides, key", [
    (["corrector.kind=forest"], "corrector.kind"),
    (["corrector.kinds=[xgboost, svm]"], "corrector.kinds"),
    (["corrector.kinds=[fisher, fisher]"], "corrector.kinds"),
    (["corrector.kinds=[fisher, logistic]"], "corrector.kinds"),  # leaves out corrector.kind (xgboost)
    (["corrector.kinds=[xgboost, fisher]", "corrector.fisher.whiten_dims=0"], "corrector.fisher.whiten_dims"),
    (["corrector.logistic.whiten_dims=[16, null]"], "corrector.logistic.whiten_dims"),  # checked though not run
    (["detectors.names=[msp, odin]"], "detectors.names"),
    (["detectors.names=[msp, msp]"], "detectors.names"),
    (["corrector.svm={C: 1}"], "corrector.svm"),
    (["corrector.kind=collections:OrderedDict"], "corrector.kind"),  # imports, but is no kind
    (["data.source=no_such_package.sources:Mine"], "data.source"),
    (["detectors.names=[no_such_package:Score]"], "detectors.names"),
    (["base_net.arch=no_such_package:Net"], "base_net.arch"),
])
def test_kinds_and_detectors_name_the_key(overrides, key):
    with pytest.raises(SpecError, match="'" + re.escape(key) + "'"):
        spec_from_dict({}, overrides)


def test_kind_alone_or_in_a_list():
    assert spec_from_dict({}, ["corrector.kind=fisher"]).corrector.all_kinds == ["fisher"]
    spec = spec_from_dict({}, ["corrector.kinds=[xgboost, fisher, logistic]", "detectors.names=[msp, energy, knn]"])
    assert spec.corrector.all_kinds == ["xgboost", "fisher", "logistic"] and spec.corrector.kind == "xgboost"
    assert spec_from_dict({}, ["corrector.kind=logistic", "corrector.kinds=[fisher, logistic]"]).corrector.kind == \
        "logistic"
    assert spec_from_dict({}).corrector.all_kinds == ["xgboost"] and spec_from_dict({}).detectors.names == []


def test_a_run_directory_spec_an_older_version_wrote_is_refused_in_one_line(tmp_path):
    # a spec.yaml the tool wrote before data.n_images moved under data.synthetic
    (tmp_path / "spec.yaml").write_text("name: old\nstorage: outputs\ndata:\n  n_images: 300\nfolds: [none]\n"
                                        "seeds: [0]\nbase_net: {}\nfeatures: {}\ncorrector: {}\nresources: {}\n")
    with pytest.raises(SpecError, match=r"run's spec file .*unknown key 'data\.n_images'.*data\.synthetic\.n_images"
                                        r".*rerun one trial"):
        load_spec(tmp_path / "spec.yaml", stored=True)


def test_the_spec_writes_each_plugin_s_settings_under_its_name_and_reads_them_back():
    spec = spec_from_dict({}, ["corrector.kinds=[xgboost, fisher]", "corrector.fisher.whiten_dims=16",
                               "detectors.names=[knn, msp]", "data.synthetic.n_images=300"])
    raw = spec.to_dict()
    assert raw["corrector"]["fisher"] == {"whiten_dims": 16} and raw["corrector"]["xgboost"]["max_rounds"] == 400
    assert raw["detectors"] == {"names": ["knn", "msp"], "tap": None, "knn": {"k": 10}}  # msp has no settings
    assert raw["data"]["synthetic"] == {"n_images": 300} and "settings" not in raw["corrector"]
    assert spec_from_dict(raw).to_dict() == raw


def test_precision_is_checked():
    with pytest.raises(SpecError, match="unknown key 'base_net.amp'"):
        load_spec("sweeps/smoke.yaml", ["base_net.amp=false"])
    with pytest.raises(SpecError, match="base_net.precision.*auto, fp32 or bf16"):
        load_spec("sweeps/smoke.yaml", ["base_net.precision=fp16"])
    assert load_spec("sweeps/smoke.yaml", ["base_net.precision=bf16"]).base_net.precision == "bf16"
