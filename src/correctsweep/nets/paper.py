"""paper: the published CNN -> LSTM -> attention classifier (SPEC §1), shapes unchanged, the default net."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from correctsweep.config import settings_of
from correctsweep.errors import SpecError
from correctsweep.nets.base import Family


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv, batch norm, ReLU and 2x2 max-pool, the last two swapped: ReLU is monotone, so the two orders
    give bit-identical outputs and gradients, and ReLU then runs on a quarter of the elements."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), nn.BatchNorm2d(c_out),
                         nn.MaxPool2d(2), nn.ReLU(inplace=True))


class PaperNet(nn.Module):
    """Input: [B, 3, H, W] scaled to [-1, 1] (BaseNet does it). Taps: the conv stack's map, the LSTM and
    attention outputs over the T = H'W' positions, the attention weights and the FC hidden layer."""

    TAPS = ("conv", "lstm", "attn", "attn_weights", "fc")
    DEFAULT_TAPS = ("conv", "lstm", "attn", "attn_weights", "fc", "logits", "softmax")
    FEATURE_TAP = "fc"
    # attention each position receives, averaged over queries (the heads are averaged by torch): [B, T]
    POOLING = {"attn_weights": lambda w: w.mean(1)}

    def __init__(self, num_classes: int, heads: int = 4, dropout: float = 0.5):
        super().__init__()
        self.convs = nn.Sequential(conv_block(3, 32), conv_block(32, 64), conv_block(64, 128))
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.attn = nn.MultiheadAttention(128, heads, batch_first=True)
        self.fc = nn.Linear(128, 128)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.named_taps(x, set())[0]

    def named_taps(self, x: torch.Tensor, wanted: set[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        conv = self.convs(x)                                  # [B, 128, H', W']
        seq = conv.flatten(2).transpose(1, 2)                 # [B, T, 128]
        # fp32 even under autocast: torch's cuDNN RNN autocast casts to fp16 whatever the autocast
        # dtype, and unscaled fp16 gradients through 36-144 LSTM steps underflow. Sequential, so cheap.
        with torch.autocast(seq.device.type, enabled=False):
            lstm, _ = self.lstm(seq.float())
        attn, weights = self.attn(lstm, lstm, lstm, need_weights="attn_weights" in wanted)
        hidden = torch.relu(self.fc(attn.mean(1)))
        logits = self.out(self.drop(hidden))
        return logits, {"conv": conv, "lstm": lstm, "attn": attn, "attn_weights": weights, "fc": hidden}


@dataclass
class PaperSettings:
    heads: int = 4
    """Attention heads (must divide 128)."""
    dropout: float = 0.5
    """Dropout before the last linear layer."""


class Paper(Family):
    """The published net (the default)."""

    name = "paper"
    Settings = PaperSettings

    @classmethod
    def check(cls, settings: PaperSettings) -> None:
        if settings.heads < 1 or 128 % settings.heads:
            raise SpecError("'base_net.paper.heads' must divide 128 (1, 2, 4, 8, ...)")
        if not 0 <= settings.dropout < 1:
            raise SpecError("'base_net.paper.dropout' must be in [0, 1)")

    @classmethod
    def check_args(cls, arch: str, init_args: dict) -> None:
        if init_args:
            raise SpecError("'base_net.init_args' is for torchvision and users' nets; the paper net's settings are "
                            "base_net.paper.heads and base_net.paper.dropout")

    @classmethod
    def build(cls, cfg, num_classes: int) -> nn.Module:
        settings = settings_of(cfg, cfg.arch)
        return PaperNet(num_classes, settings.heads, settings.dropout)
