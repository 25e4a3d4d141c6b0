"""A user's own nn.Module: base_net.module "package.module:Class", built as Class(num_classes=K,
**base_net.init_args). It maps images [B, 3, H, W] scaled to [-1, 1] to logits [B, K]; its taps are its
graph nodes (or named modules), like a torchvision model's."""

from __future__ import annotations

import importlib

import torch.nn as nn

from correctsweep.errors import SpecError


def resolve(path: str) -> type:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SpecError(f"base_net.module '{path}' must look like package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 -- a user's module may raise anything on import
        raise SpecError(f"base_net.module '{path}' does not import ({type(e).__name__}: {str(e)[:80]}); "
                        "check the module path and that it is importable (PYTHONPATH)") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError(f"base_net.module '{path}': {attr} is not an nn.Module class in {module_name}")
    return cls


def check(cfg) -> None:
    resolve(cfg.module)


def build(cfg, num_classes: int) -> nn.Module:
    try:
        return resolve(cfg.module)(num_classes=num_classes, **cfg.init_args)
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SpecError(f"base_net.module {cfg.module} could not be built with num_classes={num_classes} and "
                        f"base_net.init_args ({type(e).__name__}: {str(e)[:80]})") from None
