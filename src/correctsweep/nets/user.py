"""A user's own nn.Module: base_net.arch "package.module:Class", built as Class(num_classes=K,
**base_net.init_args). It maps images [B, 3, H, W] scaled to [-1, 1] to logits [B, K]; its taps are its
graph nodes (or named modules), like a torchvision model's."""

from __future__ import annotations

import torch.nn as nn

from correctsweep.errors import SpecError
from correctsweep.nets.base import Family
from correctsweep.plugins import load_class


def resolve(path: str) -> type:
    cls = load_class(path, "base_net.arch")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError(f"'base_net.arch' {path!r} is not an nn.Module class")
    return cls


class UserNet(Family):
    """Any arch with a colon: a user's module, imported from the Python path."""

    name = "module"

    @classmethod
    def claims(cls, name: str) -> bool:
        return ":" in name

    @classmethod
    def spellings(cls) -> list[str]:
        return []  # any package.module:Class

    @classmethod
    def check_args(cls, arch: str, init_args: dict) -> None:
        resolve(arch)

    @classmethod
    def build(cls, cfg, num_classes: int) -> nn.Module:
        try:
            return resolve(cfg.arch)(num_classes=num_classes, **cfg.init_args)
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SpecError(f"base_net.arch {cfg.arch} could not be built with num_classes={num_classes} and "
                            f"base_net.init_args ({type(e).__name__}: {str(e)[:80]})") from None
