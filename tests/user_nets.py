"""Users' own base nets, named in specs as base_net.arch "user_nets:Class" (tests/ is on the path)."""
import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """A small CNN a user might bring: conv -> pool -> linear."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BranchyNet(TinyNet):
    """Data-dependent control flow, which FX cannot trace: its taps come from forward hooks."""

    def forward(self, x):
        h = self.features(x)
        if h.sum() > 0:  # a Python branch on a tensor's value
            h = h * 1.0
        return self.head(h.flatten(1))


class WrongOutput(TinyNet):
    def forward(self, x):
        return torch.zeros(len(x), 2)


NotAModule = 42
