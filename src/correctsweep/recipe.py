"""Training-recipe options beyond the published method, applied to a batch in `train._train_epoch`:
RandAugment and mixup/cutmix (base_net.randaugment_ops, mixup_alpha, cutmix_alpha, mix_probability).
Each is off by default, and then draws no random number: the default recipe trains bit for bit as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from correctsweep.config import BaseNetConfig

RANDAUGMENT_GROUP = 8  # images per RandAugment draw: v2 draws one set of operations per call


def randaugment(x: torch.Tensor, cfg: BaseNetConfig) -> torch.Tensor:
    """RandAugment of a uint8 batch [B, C, H, W] on its device, each group of RANDAUGMENT_GROUP images with its
    own operations (one call per image would cost more than the training step); its draws come from torch's
    global generator, which train_base_net seeds."""
    from torchvision.transforms import v2

    transform = v2.RandAugment(num_ops=cfg.randaugment_ops, magnitude=cfg.randaugment_magnitude)
    return torch.cat([transform(group) for group in x.split(RANDAUGMENT_GROUP)])


@dataclass
class Mixed:
    """A mixed batch: the images the net sees, the shuffled order whose labels are mixed in, and the share
    `lam` of the batch's own labels in the loss."""

    x: torch.Tensor
    partner: torch.Tensor
    lam: float

    def loss(self, loss_fn: Callable, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * loss_fn(logits, y) + (1 - self.lam) * loss_fn(logits, y[self.partner])


def mix(x: torch.Tensor, cfg: BaseNetConfig, rng: np.random.Generator) -> Mixed | None:
    """The batch mixed by mixup or cutmix (one of the two, half the time each when both are on), or None for a
    batch left unmixed (1 - mix_probability of them, or neither option on)."""
    kinds = [k for k, alpha in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if alpha > 0]
    if not kinds or rng.random() >= cfg.mix_probability:
        return None
    kind = kinds[int(rng.integers(len(kinds)))]
    alpha = cfg.mixup_alpha if kind == "mixup" else cfg.cutmix_alpha
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if kind == "mixup":  # the net takes float pixels 0..255 as it takes uint8 ones
        return Mixed(lam * x.float() + (1 - lam) * x[partner].float(), partner, lam)
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    out = x.clone()
    out[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    # the box is clipped at the border: the labels mix by the area actually pasted
    return Mixed(out, partner, 1 - (bottom - top) * (right - left) / (h * w))
