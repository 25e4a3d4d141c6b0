"""The base net f: the published CNN -> LSTM -> attention classifier (SPEC §1), shapes unchanged."""

from __future__ import annotations

import torch
import torch.nn as nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class BaseNet(nn.Module):
    def __init__(self, num_classes: int, heads: int = 4, dropout: float = 0.5, excluded_index: int | None = None):
        super().__init__()
        self.convs = nn.Sequential(conv_block(3, 32), conv_block(32, 64), conv_block(64, 128))
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.attn = nn.MultiheadAttention(128, heads, batch_first=True)
        self.fc = nn.Linear(128, 128)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(128, num_classes)
        self.excluded_index = excluded_index
        # Added to the logits: -inf on the excluded class, so f can never predict what it never saw.
        mask = torch.zeros(num_classes)
        if excluded_index is not None:
            mask[excluded_index] = float("-inf")
        self.register_buffer("logit_mask", mask)

    def forward(self, x: torch.Tensor, with_taps: bool = False):
        """x: uint8 or float [B, C, H, W] with C in {1, 3}, pixel values 0..255."""
        x = x.float().div(127.5).sub(1.0)
        if x.shape[1] == 1:  # grayscale is replicated to the three input channels
            x = x.expand(-1, 3, -1, -1)
        conv = self.convs(x)                                  # [B, 128, H', W']
        seq = conv.flatten(2).transpose(1, 2)                 # [B, T, 128]
        # fp32 even under autocast: torch's cuDNN RNN autocast casts to fp16 whatever the autocast
        # dtype, and unscaled fp16 gradients through 36-144 LSTM steps underflow. Sequential, so cheap.
        with torch.autocast(seq.device.type, enabled=False):
            lstm, _ = self.lstm(seq.float())
        attn, weights = self.attn(lstm, lstm, lstm, need_weights=with_taps)
        hidden = torch.relu(self.fc(attn.mean(1)))
        logits = self.out(self.drop(hidden))
        masked = logits.float() + self.logit_mask
        if not with_taps:
            return masked
        return masked, {"conv": conv, "lstm": lstm, "attn": attn, "attn_weights": weights,
                        "fc": hidden, "logits": logits}
