"""Base nets by name: the paper net, torchvision models and a user's module, their taps and their errors."""
import dataclasses
import importlib.util

import pytest
import torch
from layouts import write_cifar10

from correctsweep import nets
from correctsweep.cli import main
from correctsweep.config import BaseNetConfig, load_spec, spec_from_dict
from correctsweep.data import load_dataset
from correctsweep.errors import SpecError
from correctsweep.features import extract
from correctsweep.trial import plan_net


def probe(**kw):
    """The net a spec's base_net section names, checked as a spec is, then probed on 32 px images."""
    return nets.probe(spec_from_dict({"base_net": kw}).base_net, 5, 3, 32)


@pytest.mark.parametrize("arch, feature", [("resnet18", "flatten"), ("mobilenet_v3_small", "classifier.1"),
                                           ("efficientnet_b0", "flatten")])
def test_torchvision_nets_are_built_for_k_classes_with_their_taps(arch, feature):
    p = probe(arch=arch)
    net = nets.build(BaseNetConfig(arch=arch), 5, excluded_index=1).eval()
    logits = net(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))  # grayscale is replicated to 3 channels
    assert logits.shape == (2, 5) and torch.isinf(logits[:, 1]).all() and torch.isfinite(logits[:, 0]).all()
    assert net.feature_tap() == feature and net.default_taps() == [feature, "logits"]
    assert p.shapes["logits"] == (5,) and len(p.shapes[feature]) == 1


def test_taps_are_pooled_by_shape():
    net = nets.build(BaseNetConfig(arch="resnet18"), 5).eval()
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    pred, taps = extract(net, images, ["layer2", "flatten", "logits", "softmax"], full=True, batch_size=2,
                         device=torch.device("cpu"))
    assert taps["layer2"].shape == (3, 2 * 128) and taps["layer2_full"].shape == (3, 128 * 4 * 4)
    assert taps["flatten"].shape == (3, 512) and taps["softmax"].shape == (3, 5) and pred.shape == (3,)
    maps = net.forward_taps(images, ["layer2"])[1]["layer2"]
    assert torch.allclose(torch.from_numpy(taps["layer2"][:, :128]), maps.mean((2, 3)), atol=1e-5)
    assert torch.allclose(torch.from_numpy(taps["layer2"][:, 128:]), maps.amax((2, 3)), atol=1e-5)


def test_a_user_module_and_one_fx_cannot_trace():
    traced = probe(arch="user_nets:TinyNet", init_args={"width": 4})
    assert "features.1" in traced.shapes and traced.net.feature_tap() == "flatten"
    hooked = probe(arch="user_nets:BranchyNet")  # read through forward hooks on named modules
    assert set(hooked.shapes) == {"features", "features.0", "features.1", "features.2", "head", "logits", "softmax"}
    masked, raw = hooked.net.forward_taps(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["features.0", "logits"])
    assert raw["features.0"].shape == (2, 8, 32, 32) and masked.shape == (2, 5)


@pytest.mark.parametrize("settings, match", [
    ({"arch": "resnet81"}, "close names: resnet18"),
    ({"arch": "paper", "paper": {"heads": 3}}, "must divide 128"),
    ({"arch": "paper", "init_args": {"heads": 2}}, "base_net.paper.heads"),
    ({"arch": "torchvision"}, "must name a torchvision model"),
    ({"arch": "resnet18", "init_args": {"weights": "IMAGENET1K_V1"}}, "weights=None: no downloads"),
    ({"arch": "resnet18", "init_args": {"depth": 3}}, "init_args do not fit resnet18"),
    ({"arch": "user_nets:NotAModule"}, "is not an nn.Module class"),
    ({"arch": "no_such_package.nets:Net"}, "does not import"),
    ({"arch": "user_nets:"}, "must look like package.module:Class"),
    ({"arch": "user_nets:Missing"}, "user_nets has no Missing"),
    ({"arch": "user_nets:WrongOutput"}, r"returns \(2, 2\) for 2 images, not \[B, K\]"),
    ({"arch": "alexnet"}, "fails on 32x32 images"),
    ({"arch": "timm/test_resnett"}, "timm has no model 'test_resnett'; close names: timm/test_resnet"),
    ({"arch": "timm/test_resnet", "init_args": {"pretrained": True}}, "pretrained=False: no downloads"),
])
def test_bad_nets_are_one_line_errors(settings, match):
    with pytest.raises(SpecError, match=match):
        probe(**settings)


def test_bad_taps_name_close_nodes(tmp_path):
    spec = load_spec("sweeps/smoke.yaml", [f"data.cache_dir={tmp_path}"])
    ds = load_dataset(spec.data)
    for overrides, match in ((["base_net.arch=resnet18", "features.taps=[layer4.1.relu_2]"], "close names: layer4"),
                             (["detectors.names=[msp]", "features.taps=[fc, softmax]"], "reads the tap 'logits'"),
                             (["detectors.tap=fc7"], "'fc7' is not a tap"),
                             (["detectors.names=[knn]", "detectors.tap=conv", "features.taps=[fc, logits]"],
                              "'detectors.tap' names 'conv'")):
        with pytest.raises(SpecError, match=match):
            plan_net(load_spec("sweeps/smoke.yaml", [f"data.cache_dir={tmp_path}", *overrides]), ds)
    plan = plan_net(dataclasses.replace(spec, base_net=BaseNetConfig(arch="resnet18")), ds)
    assert plan.taps == ["flatten", "logits"] and plan.detectors_tap == "flatten"


def test_taps_command_lists_nodes_and_marks_the_first_picks(tmp_path, capsys):
    assert main(["taps", "sweeps/smoke.yaml", "--set", "base_net.arch=resnet18", "--set",
                 f"data.cache_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines[2:]}
    assert "default, before the classifier" in row["flatten"] and "stage output" in row["layer3.1.relu_1"]
    assert row["layer1.0.conv1"].split()[1] == "64x12x12" and row["logits"].split()[1] == "7"


SMOKE = ["--set", "base_net.epochs=1", "--set", "corrector.n_candidates=2", "--set", "detectors.names=[msp, knn]"]


TIMM = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="the timm extra is not installed")


@pytest.mark.parametrize("net", ["base_net.arch=paper", "base_net.arch=resnet18", "base_net.arch=mobilenet_v3_small",
                                 "base_net.arch=user_nets:TinyNet",
                                 pytest.param("base_net.arch=timm/test_resnet", marks=TIMM)])
def test_smoke_trial_for_each_kind_of_net(tmp_path, net):
    write_cifar10(tmp_path / "cifar", train_per_class=10, test_per_class=4)
    args = ["trial", "sweeps/smoke.yaml", "--fold", "cat", "--set", f"storage={tmp_path}", "--set",
            "data.source=cifar10", "--set", f"data.path={tmp_path / 'cifar'}", "--set", "data.image_size=32",
            "--set", net, *SMOKE]
    assert main(args) == 0
    from correctsweep.results import TrialResult

    (result,) = [TrialResult.read(p) for p in (tmp_path / "smoke" / "results").rglob("*.json")]
    assert result.fold == "3" and result.class_names[3] == "cat" and result.net == net.split("=")[1]
    assert set(result.methods) == {"xgboost", "msp", "knn"}
