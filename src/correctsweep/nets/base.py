"""What every base net f is: a body (any nn.Module mapping images [B, 3, H, W] to logits [B, K]) in one
wrapper that feeds it, masks the excluded class's logit and reads its taps.

The wrapper owns what must be the same for every net: pixels 0..255 scaled to [-1, 1], grayscale
replicated to three channels, the conv layers' memory format, the excluded logit at -inf (f never
predicts what it never saw), and the derived taps `logits` (raw, the excluded column NaN in features)
and `softmax` (of the masked logits).
A body names its other taps one of two ways:
  * a body with `named_taps(x) -> (logits, {name: tensor})` and a class attribute TAPS (the paper net);
  * any other body: graph nodes, read with torchvision's FX feature extractor, or with forward hooks on
    named modules where FX cannot trace the body.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn as nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from correctsweep.errors import SpecError
from correctsweep.plugins import NETS, Plugin

DERIVED_TAPS = ("logits", "softmax")


class Family(Plugin):
    """A family of base nets: the base_net.arch values it `claims` and how it builds their bodies. Its own
    settings (Settings) go under base_net.<arch>; init_args, if it takes them, go to the constructor."""

    registry = NETS

    @classmethod
    def check_args(cls, arch: str, init_args: dict) -> None:
        """A SpecError when `init_args` cannot go to `arch`'s constructor."""

    @classmethod
    @abstractmethod
    def build(cls, cfg, num_classes: int) -> nn.Module:
        """The body for `cfg` (a BaseNetConfig): images [B, 3, H, W] in [-1, 1] -> logits [B, K]."""


def check_fixed_args(init_args: dict, no_download: str) -> None:
    """A SpecError when base_net.init_args sets what correctsweep sets for a model zoo's constructor: the argument
    that keeps it from downloading weights (`no_download`, e.g. "weights=None") or num_classes."""
    for key in (no_download.split("=")[0], "num_classes"):
        if key in init_args:
            raise SpecError(f"'base_net.init_args.{key}' is set by correctsweep ({no_download}: no downloads; "
                            "num_classes: the dataset's classes); remove it")


class BaseNet(nn.Module):
    def __init__(self, body: nn.Module, num_classes: int, excluded_index: int | None = None,
                 channels_last: bool = False):
        super().__init__()
        # channels-last (NHWC) puts a pixel's channels side by side, which CPU conv, batch-norm and
        # max-pool kernels vectorise over: the same fp32 math, ~1.3x the images/s (benchmarks/pipeline_bench.py)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.body = body.to(memory_format=self.memory_format)
        self.num_classes = num_classes
        self.excluded_index = excluded_index
        mask = torch.zeros(num_classes)
        if excluded_index is not None:
            mask[excluded_index] = float("-inf")
        self.register_buffer("logit_mask", mask)
        self._readers: dict[tuple[str, ...], TapReader] = {}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """x: uint8 or float [B, C, H, W] with C in {1, 3}, pixel values 0..255."""
        x = x.float().div(127.5).sub(1.0)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return x.contiguous(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x)).float() + self.logit_mask

    def forward_taps(self, x: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(masked logits, {tap: raw tensor}) for the body's own taps among `names`, plus `logits`."""
        own = tuple(n for n in names if n not in DERIVED_TAPS)
        if hasattr(self.body, "named_taps"):
            logits, raw = self.body.named_taps(self.prepare(x), set(own))
        else:
            if own not in self._readers:
                self._readers[own] = TapReader(self.body, own)
            logits, raw = self._readers[own](self.prepare(x))
        raw = {n: raw[n] for n in own} | {"logits": logits}
        return logits.float() + self.logit_mask, raw

    @property
    def pooling(self) -> dict:
        """Taps the body pools its own way (name -> function of the raw tensor), e.g. attention weights."""
        return getattr(self.body, "POOLING", {})

    def tap_shapes(self, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Every tap this net has (tensor-valued graph nodes or named taps, then the derived ones) and its
        shape for one image, from one pass over `x` in eval mode."""
        names = list(self.body.TAPS) if hasattr(self.body, "named_taps") else TapReader.nodes(self.body)
        with torch.no_grad():
            if hasattr(self.body, "named_taps"):
                _, raw = self.body.named_taps(self.prepare(x), set(names))
            else:
                _, raw = TapReader(self.body, tuple(names))(self.prepare(x))
        shapes = {n: tuple(raw[n].shape[1:]) for n in names if isinstance(raw.get(n), torch.Tensor)
                  and raw[n].dim() >= 1 and raw[n].shape[0] == len(x)}
        return shapes | {t: (self.num_classes,) for t in DERIVED_TAPS}

    def default_taps(self) -> list[str]:
        if hasattr(self.body, "DEFAULT_TAPS"):
            return list(self.body.DEFAULT_TAPS)
        return [self.feature_tap(), "logits"]

    def feature_tap(self) -> str:
        """The representation just before the classifier: what the distance-based detectors measure."""
        if hasattr(self.body, "FEATURE_TAP"):
            return self.body.FEATURE_TAP
        nodes, last = TapReader.nodes(self.body), self.final_layer_name()
        modules = dict(self.body.named_modules())
        i = nodes.index(last) if last in nodes else len(nodes) - 1
        # the input of the classifier, looking through dropout (an identity at inference)
        while i > 0 and isinstance(modules.get(nodes[i - 1]), nn.Dropout):
            i -= 1
        return nodes[max(i - 1, 0)]

    def final_layer(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(weight [K, d], bias [K]) of f's classifier, which the feature tap feeds; None if it has none."""
        name = self.final_layer_name()
        if name is None:
            return None
        layer = dict(self.body.named_modules())[name]
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        return layer.weight.detach().float().cpu(), bias.detach().float().cpu()

    def final_layer_name(self) -> str | None:
        """The body's last nn.Linear with K outputs: f's classifier."""
        linear = [n for n, m in self.body.named_modules() if isinstance(m, nn.Linear)
                  and m.out_features == self.num_classes]
        return linear[-1] if linear else None

class TapReader:
    """Reads named graph nodes of a body with torchvision's FX feature extractor, and the logits with
    them in the same pass; a body FX cannot trace is read with forward hooks on its named modules."""

    def __init__(self, body: nn.Module, names: tuple[str, ...]):
        self.body, self.names = body, names
        graph = self.graph_nodes(body)
        if graph is not None:
            self.extractor = create_feature_extractor(body, return_nodes=list(dict.fromkeys([*names, graph[-1]])))
            self.output = graph[-1]
        else:
            self.extractor = None

    @staticmethod
    def graph_nodes(body: nn.Module) -> list[str] | None:
        """The body's graph nodes at inference (one FX trace), or None when FX cannot trace it."""
        try:
            return get_graph_node_names(body)[1]
        except Exception:  # noqa: BLE001 -- FX raises anything a traced forward raises (TraceError, TypeError, ...)
            return None

    @classmethod
    def nodes(cls, body: nn.Module) -> list[str]:
        """The tappable names: graph nodes at inference, or named modules for a body FX cannot trace."""
        graph = cls.graph_nodes(body)
        return graph if graph is not None else [name for name, _ in body.named_modules() if name]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.extractor is not None:
            self.extractor.train(self.body.training)
            out = self.extractor(x)
            return out[self.output], out
        out, modules, hooks = {}, dict(self.body.named_modules()), []
        for name in self.names:
            hooks.append(modules[name].register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, o[0] if isinstance(o, (tuple, list)) else o)))
        try:
            logits = self.body(x)
        finally:
            for h in hooks:
                h.remove()
        return logits, out
