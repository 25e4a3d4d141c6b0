"""Any torchvision classification model by name (resnet18, mobilenet_v3_small, efficientnet_b0, ...),
built with num_classes=K and weights=None: nothing is downloaded, every net is trained from scratch.
base_net.init_args go to the model's constructor (e.g. {dropout: 0.3} for efficientnet_b0)."""

from __future__ import annotations

import torch.nn as nn
import torchvision
from torchvision.models import get_model, list_models

from correctsweep.errors import SpecError


def names() -> list[str]:
    return list_models(module=torchvision.models)


def check(cfg) -> None:
    for key in ("weights", "num_classes"):
        if key in cfg.init_args:
            raise SpecError(f"'base_net.init_args.{key}' is set by correctsweep (weights=None: no downloads; "
                            "num_classes: the dataset's classes); remove it")


def build(cfg, num_classes: int) -> nn.Module:
    try:
        return get_model(cfg.arch, weights=None, num_classes=num_classes, **cfg.init_args)
    except TypeError as e:
        raise SpecError(f"base_net.init_args do not fit {cfg.arch} ({str(e)[:100]}); fix or remove them") from None
