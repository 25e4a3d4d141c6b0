"""Base nets by name (the spec's base_net.arch).

A family of nets is one module here with a `base.Family` subclass: the base_net.arch values it claims,
its settings and their check, and `build(cfg, num_classes) -> nn.Module` (the body). Defining it registers
it (plugins.NETS); `user` builds a user's "package.module:Class". Every body is wrapped in `base.BaseNet`,
so every net gets the same trainer, masking, taps and caching.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from correctsweep.errors import SpecError
from correctsweep.nets.base import DERIVED_TAPS, BaseNet, Family
from correctsweep.plugins import NETS

__all__ = ["DERIVED_TAPS", "BaseNet", "Family", "Probe", "build", "probe"]


def build(cfg, num_classes: int, excluded_index: int | None = None) -> BaseNet:
    return BaseNet(NETS.get(cfg.arch).build(cfg, num_classes), num_classes, excluded_index, cfg.channels_last)


@dataclass
class Probe:
    """A net built once on the CPU and fed two blank images of the data's shape."""

    net: BaseNet
    shapes: dict[str, tuple[int, ...]]
    """Every tap the net has -> its shape for one image."""

    def check_taps(self, names: list[str], key: str = "features.taps") -> None:
        """A SpecError naming the first tap this net lacks, with the closest names it has."""
        known = list(self.shapes)
        for name in names:
            if name not in self.shapes:
                close = difflib.get_close_matches(name, known, n=4, cutoff=0.5) or known[-4:]
                raise SpecError(f"{key}: '{name}' is not a tap of this net; close names: {', '.join(close)} "
                                "(`correctsweep taps SPEC` lists them all)")


def probe(cfg, num_classes: int, channels: int, image_size: int) -> Probe:
    """The net `cfg` names, checked before any trial writes anything: a SpecError in one line when its
    forward fails on the data's images or its output is not [B, K]."""
    net = build(cfg, num_classes).eval()
    name = cfg.arch
    x = torch.zeros(2, channels, image_size, image_size, dtype=torch.uint8)
    try:
        with torch.no_grad():
            out = net.body(net.prepare(x))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise SpecError(f"base net {name} returns {shape} for 2 images, not [B, K] = (2, {num_classes}) logits; "
                            "its forward must return one logit per class")
        return Probe(net, net.tap_shapes(x))
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 -- any net's forward may raise anything on a wrong input size
        layout = (" (or set base_net.channels_last: false if it needs contiguous NCHW tensors)"
                  if cfg.channels_last else "")
        raise SpecError(f"base net {name} fails on {image_size}x{image_size} images ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:100]}); change data.image_size or the net{layout}") from None
