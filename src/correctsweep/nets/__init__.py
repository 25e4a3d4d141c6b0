"""Base nets by name (the spec's base_net.arch, or base_net.module for a user's own class).

A family of nets is one module here with `names()` (the base_net.arch values it builds), `check(cfg)`
(its settings, before anything runs) and `build(cfg, num_classes) -> nn.Module` (the body). The package
finds every such module itself, so adding a family is one new module; `user` builds base_net.module.
Every body is wrapped in `base.BaseNet`, so every net gets the same trainer, masking, taps and caching.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

import torch

from correctsweep.errors import SpecError
from correctsweep.nets import user
from correctsweep.nets.base import DERIVED_TAPS, BaseNet

_modules = (importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__))
FAMILIES = [module for module in _modules if hasattr(module, "names")]

__all__ = ["DERIVED_TAPS", "BaseNet", "Probe", "build", "check", "probe"]


def family(cfg) -> ModuleType:
    """The module that builds the net `cfg` (a BaseNetConfig) names, or a SpecError with close names."""
    if cfg.module:
        return user
    known = []
    for module in FAMILIES:
        if cfg.arch in module.names():
            return module
        known += module.names()
    close = difflib.get_close_matches(cfg.arch, known, n=4, cutoff=0.5)
    raise SpecError(f"base_net.arch '{cfg.arch}' is neither 'paper' nor a torchvision classification model"
                    + (f"; close names: {', '.join(close)}" if close else "; e.g. resnet18, mobilenet_v3_small")
                    + " (or set base_net.module to package.module:Class)")


def check(cfg) -> None:
    family(cfg).check(cfg)


def build(cfg, num_classes: int, excluded_index: int | None = None) -> BaseNet:
    return BaseNet(family(cfg).build(cfg, num_classes), num_classes, excluded_index, cfg.channels_last)


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
    name = cfg.module or cfg.arch
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
