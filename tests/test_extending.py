"""docs/extending.md's examples, run exactly as printed: a user's net and detector from outside the package,
a corrector kind and a dataset source as modules inside it, through a real trial, and the kind exported to
ONNX, whose pair agrees with predict."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from correctsweep.cli import main
from correctsweep.plugins import DETECTORS, KINDS, SOURCES
from correctsweep.results import TrialResult

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
INSIDE = ("src/correctsweep/kinds/centroid.py", "src/correctsweep/sources/csvlist.py")
OUTSIDE = ("my_nets.py", "my_detectors.py")


def examples() -> dict[str, str]:
    """The page's Python blocks by the file each says it is (its first line)."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    return {block.splitlines()[0].removeprefix("# "): block for block in blocks}


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    code = examples()
    assert set(code) == {*INSIDE, *OUTSIDE}
    for name in OUTSIDE:
        (tmp_path / name).write_text(code[name])
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in INSIDE:
        name = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
        module = types.ModuleType(name)
        exec(compile(code[path], path, "exec"), module.__dict__)  # defining the class registers it
        monkeypatch.setitem(sys.modules, name, module)
    yield
    KINDS.known.pop("centroid", None), SOURCES.known.pop("csvlist", None), DETECTORS.known.pop("margin", None)


def test_the_examples_add_a_net_a_kind_a_source_and_a_detector_and_export(plugins, tmp_path):
    assert "centroid" in KINDS.names() and "csvlist" in SOURCES.names()
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for label, level in (("rust", 40), ("scratch", 120), ("clean", 200)):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(level + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / label / f"{i}.png")
            rows.append(f"img/{label}/{i}.png,{label}")
    (tmp_path / "images.csv").write_text("\n".join(rows))
    run = tmp_path / "out" / "smoke"
    sets = [f"storage={tmp_path / 'out'}", "data.source=csvlist", f"data.path={tmp_path / 'images.csv'}",
            "data.image_size=16", "base_net.arch=my_nets:SmallCNN", "base_net.epochs=1",
            "corrector.kinds=[xgboost, centroid]", "corrector.centroid.max_temperature=50",
            "corrector.n_candidates=2", "detectors.names=[msp, 'my_detectors:Margin']"]
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "scratch", *[a for s in sets for a in ("--set", s)]]) == 0
    (result,) = map(TrialResult.read, (run / "results").rglob("*.json"))
    assert result.class_names == ["clean", "rust", "scratch"] and result.fold == "2"
    assert result.net == "my_nets:SmallCNN"
    assert set(result.methods) == {"xgboost", "centroid", "msp", "my_detectors:Margin"}
    assert (run / result.paths.correctors["centroid"] / "model.npz").is_file()
    assert "max_temperature: 50" in (run / "spec.yaml").read_text()  # its settings, under its name

    export_and_compare(run, tmp_path / "onnx")


def export_and_compare(run, folder):
    """The centroid kind's g.onnx, with f.onnx, gives predict's h on the run's test images."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from correctsweep import load_corrected
    from correctsweep.data import make_splits
    from correctsweep.export import OnnxPair
    from correctsweep.predict import run_dataset

    assert main(["export", str(run), "--fold", "scratch", "--seed", "0", "--kind", "centroid", "--onnx",
                 str(folder)]) == 0
    clf = load_corrected(run, fold="scratch", seed=0, kind="centroid")
    ds = run_dataset(clf.spec)
    images = ds.images[make_splits(ds, clf.spec.data)["test"]]
    ref, got = clf.run(images), OnnxPair(folder).run(images.numpy())
    assert np.abs(got.proba - ref.proba).max() < 1e-3 and (got.pred_f == ref.pred_f).all()
