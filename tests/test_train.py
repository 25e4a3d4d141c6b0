"""The base net's loss and augmentation."""
import numpy as np
import torch

from correctsweep.train import augment, weighted_cross_entropy


def test_weighted_cross_entropy_matches_torch_without_smoothing():
    logits, y = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 4, 0, 1, 1])
    weights = torch.tensor([1.0, 2.0, 50.0, 3.0, 0.5])
    expected = torch.nn.functional.cross_entropy(logits, y, weight=weights)
    assert torch.allclose(weighted_cross_entropy(logits, y, weights), expected)


def test_label_smoothing_does_not_pull_towards_heavy_classes():
    # The case that collapsed FER+: one rare class with a huge weight. Predicting the true labels must
    # cost less than predicting the rare class everywhere, as it does without smoothing.
    weights, y = torch.tensor([1.0, 1.0, 200.0]), torch.tensor([0, 1, 0, 1])
    right = torch.nn.functional.one_hot(y, 3).float() * 4
    rare = torch.tensor([0.0, 0.0, 4.0]).repeat(4, 1)
    assert weighted_cross_entropy(right, y, weights, 0.1) < weighted_cross_entropy(rare, y, weights, 0.1)
    assert torch.nn.functional.cross_entropy(right, y, weight=weights, label_smoothing=0.1) > \
        torch.nn.functional.cross_entropy(rare, y, weight=weights, label_smoothing=0.1)  # torch's own does not


def test_augment_shifts_and_flips_each_image_on_its_own():
    x = torch.arange(24 * 24, dtype=torch.int32).reshape(1, 1, 24, 24).repeat(64, 1, 1, 1).to(torch.uint8)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    distinct = {o.numpy().tobytes() for o in out}
    assert len(distinct) > 20  # per-image parameters, not one draw for the batch
    # every output is the input shifted by at most 24 // 12 = 2 pixels, maybe mirrored
    src = x[0, 0].numpy()
    for o in out[:, 0].numpy():
        candidates = [np.fliplr(src), src]
        assert any(np.array_equal(o[2:-2, 2:-2], np.roll(np.roll(c, dy, 0), dx, 1)[2:-2, 2:-2])
                   for c in candidates for dy in range(-2, 3) for dx in range(-2, 3))


def _tiny_fold(n=96, size=24, classes=4):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    targets = np.arange(n) % classes
    return images, targets, np.arange(0, n - 16), np.arange(n - 16, n)


def test_channels_last_is_the_same_fp32_math():
    from correctsweep import nets
    from correctsweep.config import BaseNetConfig

    torch.manual_seed(0)
    nchw = nets.build(BaseNetConfig(channels_last=False), 4).eval()
    nhwc = nets.build(BaseNetConfig(channels_last=True), 4).eval()
    nhwc.load_state_dict(nchw.state_dict())
    x = _tiny_fold()[0][:8]
    assert nhwc.prepare(x).is_contiguous(memory_format=torch.channels_last)
    assert nhwc.body.convs[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(nchw(x), nhwc(x), atol=1e-5)  # kernels differ in summation order only


def test_bf16_trains_on_the_cpu_when_asked_and_auto_keeps_fp32_there(monkeypatch):
    from correctsweep import train
    from correctsweep.config import BaseNetConfig

    cpu = torch.device("cpu")
    assert not train.uses_bf16(BaseNetConfig(precision="auto"), cpu)
    assert train.uses_bf16(BaseNetConfig(precision="auto"), torch.device("cuda"))
    assert not train.uses_bf16(BaseNetConfig(precision="fp32"), torch.device("cuda"))
    seen = []
    real = torch.autocast
    # the trainer's own contexts name a dtype; the paper net's LSTM opts out of autocast without one
    monkeypatch.setattr(train.torch, "autocast",
                        lambda *a, **k: ("dtype" in k and seen.append(k["enabled"])) or real(*a, **k))
    images, targets, tr, va = _tiny_fold()
    cfg = BaseNetConfig(epochs=1, batch_size=16, precision="bf16", device="cpu")
    model, result = train.train_base_net(train.TrainSet(images, targets, tr, va, 4), cfg, 0)
    assert seen and all(seen)  # every training and validation pass ran under bf16 autocast
    assert np.isfinite(result.history[0]["train_loss"]) and model.logit_mask.dtype == torch.float32


def test_the_paper_nets_pool_before_relu_order_is_the_same_function():
    from correctsweep.nets.paper import conv_block

    torch.manual_seed(0)
    block, x = conv_block(3, 8), torch.randn(4, 3, 12, 12, requires_grad=True)
    published = lambda t: block[2](torch.relu(block[1](block[0](t))))  # conv, BN, ReLU, max-pool
    ours, = torch.autograd.grad((block(x) ** 2).sum(), x)
    theirs, = torch.autograd.grad((published(x) ** 2).sum(), x)
    assert torch.equal(block(x), published(x)) and torch.equal(ours, theirs)
