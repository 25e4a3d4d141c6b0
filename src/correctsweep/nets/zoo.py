"""Any torchvision classification model by name (resnet18, mobilenet_v3_small, efficientnet_b0, ...),
built with num_classes=K and weights=None: nothing is downloaded, every net is trained from scratch.
base_net.init_args go to the model's constructor (e.g. {dropout: 0.3} for efficientnet_b0)."""

from __future__ import annotations

import torch.nn as nn
import torchvision
from torchvision.models import get_model, list_models

from correctsweep.errors import SpecError
from correctsweep.nets.base import Family, check_fixed_args


class Torchvision(Family):
    """Every model of torchvision.models: base_net.arch is the model's name."""

    name = "torchvision"

    @classmethod
    def claims(cls, name: str) -> bool:
        return name in cls.spellings()

    @classmethod
    def spellings(cls) -> list[str]:
        return list_models(module=torchvision.models)

    @classmethod
    def check_args(cls, arch: str, init_args: dict) -> None:
        if arch == cls.name:
            raise SpecError("'base_net.arch' must name a torchvision model, e.g. resnet18, not 'torchvision'")
        check_fixed_args(init_args, "weights=None")

    @classmethod
    def build(cls, cfg, num_classes: int) -> nn.Module:
        try:
            return get_model(cfg.arch, weights=None, num_classes=num_classes, **cfg.init_args)
        except TypeError as e:
            raise SpecError(f"base_net.init_args do not fit {cfg.arch} ({str(e)[:100]}); fix or remove them") from None
