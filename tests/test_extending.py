"""docs/extending.md's examples, run exactly as printed: a user's net, a corrector kind and a dataset
source, each one module, through a real trial."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from correctsweep.cli import main
from correctsweep.kinds import KINDS
from correctsweep.results import TrialResult
from correctsweep.sources import SOURCES

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def examples() -> dict[str, str]:
    """docs/extending.md's Python blocks by the file each says it is (its first line)."""
    blocks = re.findall(r"```python\n(.*?)```", EXTENDING.read_text(), flags=re.S)
    return {block.splitlines()[0].removeprefix("# "): block for block in blocks}


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    code = examples()
    assert set(code) == {"my_nets.py", "src/correctsweep/kinds/centroid.py", "src/correctsweep/sources/csvlist.py"}
    (tmp_path / "my_nets.py").write_text(code["my_nets.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("src/correctsweep/kinds/centroid.py", "src/correctsweep/sources/csvlist.py"):
        name = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
        module = types.ModuleType(name)
        exec(compile(code[path], path, "exec"), module.__dict__)  # defining the class registers it
        monkeypatch.setitem(sys.modules, name, module)
    yield
    KINDS.pop("centroid", None), SOURCES.pop("csvlist", None)


def test_extending_examples_add_a_net_a_kind_and_a_source(plugins, tmp_path):
    assert "centroid" in KINDS and "csvlist" in SOURCES
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for label, level in (("rust", 40), ("scratch", 120), ("clean", 200)):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(level + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / label / f"{i}.png")
            rows.append(f"img/{label}/{i}.png,{label}")
    (tmp_path / "images.csv").write_text("\n".join(rows))
    sets = [f"storage={tmp_path / 'out'}", "data.source=csvlist", f"data.path={tmp_path / 'images.csv'}",
            "data.image_size=16", "base_net.module=my_nets:SmallCNN", "base_net.epochs=1",
            "corrector.kinds=[xgboost, centroid]", "corrector.n_candidates=2"]
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "scratch", *[a for s in sets for a in ("--set", s)]]) == 0
    (result,) = map(TrialResult.read, (tmp_path / "out" / "smoke" / "results").rglob("*.json"))
    assert result.class_names == ["clean", "rust", "scratch"] and result.fold == "2"
    assert result.net == "my_nets:SmallCNN" and set(result.methods) == {"xgboost", "centroid"}
    assert (tmp_path / "out" / "smoke" / result.paths.correctors["centroid"] / "model.npz").is_file()
