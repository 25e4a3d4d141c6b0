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
