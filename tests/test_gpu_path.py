"""The GPU path's defects, checked where a CPU can check them."""
import numpy as np
import pytest
import torch

from correctsweep import nets
from correctsweep.cli import main
from correctsweep.config import BaseNetConfig, load_spec
from correctsweep.errors import CorrectsweepError, SpecError
from correctsweep.sweep import trial_devices
from correctsweep.train import TrainSet, train_base_net


def test_lstm_runs_in_fp32_under_bf16_autocast():
    net = nets.build(BaseNetConfig(), 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, taps = net.forward_taps(torch.zeros(2, 1, 48, 48, dtype=torch.uint8), ["conv", "lstm"])
    assert taps["conv"].dtype == torch.bfloat16  # autocast is really on
    assert taps["lstm"].dtype == torch.float32


def test_gpu_visible_with_zero_gpus_per_trial_sends_trials_to_the_cpu(capsys):
    spec = load_spec("sweeps/smoke.yaml")
    forced = trial_devices(spec, cluster_gpus=1, local=True)
    assert forced.base_net.device == forced.corrector.device == "cpu"
    assert "trials run on the CPU" in capsys.readouterr().out
    assert spec.base_net.device == "auto"  # the caller's spec is left alone
    assert trial_devices(spec, cluster_gpus=0, local=True) is spec


@pytest.mark.parametrize("sets, match", [
    (["base_net.device=cuda"], "base_net.device is cuda but resources.gpus_per_trial is 0"),
    (["corrector.device=cuda"], "corrector.device is cuda but resources.gpus_per_trial is 0"),
])
def test_cuda_with_zero_gpus_per_trial_is_refused(sets, match):
    with pytest.raises(SpecError, match=match):
        trial_devices(load_spec("sweeps/smoke.yaml", sets), cluster_gpus=2, local=True)


def test_gpus_per_trial_without_a_gpu_is_refused_locally():
    spec = load_spec("sweeps/smoke.yaml", ["resources.gpus_per_trial=0.25"])
    with pytest.raises(SpecError, match="no GPU"):
        trial_devices(spec, cluster_gpus=0, local=True)
    assert trial_devices(spec, cluster_gpus=0, local=False) is spec  # an autoscaler may add GPU nodes


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_device_without_gpu_is_one_line(tmp_path, capsys):
    assert main(["trial", "sweeps/smoke.yaml", "--fold", "3", "--set", f"storage={tmp_path}",
                 "--set", "base_net.device=cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "base_net.device is cuda but no GPU is visible" in err


def test_nan_loss_stops_training_with_one_line(monkeypatch):
    from correctsweep import train

    monkeypatch.setattr(train, "weighted_cross_entropy", lambda logits, y, w, s: (logits * float("nan")).sum())
    images = torch.zeros(12, 1, 16, 16, dtype=torch.uint8)
    targets, idx = np.arange(12) % 3, np.arange(12)
    with pytest.raises(CorrectsweepError, match="loss became nan in epoch 1"):
        train_base_net(TrainSet(images, targets, idx[:9], idx[9:], 3),
                       BaseNetConfig(epochs=2, batch_size=4, device="cpu"), 0)
