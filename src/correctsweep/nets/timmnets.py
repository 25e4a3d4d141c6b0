"""timm models: base_net.arch "timm/<model name>" (e.g. timm/resnet18d, timm/convnext_atto), built with
timm.create_model(name, pretrained=False, num_classes=K, **base_net.init_args): nothing is downloaded. Its taps
are its graph nodes (or named modules where FX cannot trace it), as for a torchvision model. timm is the
optional `timm` extra, imported only when a spec names a timm model."""

from __future__ import annotations

import difflib

import torch.nn as nn

from correctsweep.errors import SpecError
from correctsweep.nets.base import Family, check_fixed_args

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise SpecError("base_net.arch names a timm model, but timm is not installed: "
                        "pip install 'correctsweep[timm]'") from None
    return timm


class Timm(Family):
    """Every timm model: base_net.arch is timm/ and the model's name."""

    name = "timm"

    @classmethod
    def claims(cls, name: str) -> bool:
        return name.startswith(PREFIX)

    @classmethod
    def spellings(cls) -> list[str]:
        return []  # any timm/<model name>: listing timm's models would import it for every spec

    @classmethod
    def check_args(cls, arch: str, init_args: dict) -> None:
        model = arch.removeprefix(PREFIX)
        timm = _timm()
        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=4, cutoff=0.6)
            raise SpecError(f"'base_net.arch': timm has no model {model!r}"
                            + (f"; close names: {', '.join(PREFIX + c for c in close)}" if close else
                               "; `python -c \"import timm; print(timm.list_models())\"` lists them"))
        check_fixed_args(init_args, "pretrained=False")

    @classmethod
    def build(cls, cfg, num_classes: int) -> nn.Module:
        try:
            return _timm().create_model(cfg.arch.removeprefix(PREFIX), pretrained=False, num_classes=num_classes,
                                        **cfg.init_args)
        except (TypeError, ValueError, AssertionError) as e:
            raise SpecError(f"base_net.init_args do not fit {cfg.arch} ({str(e)[:100]}); fix or remove them") from None
