"""Spatial regularization blocks of LSeg (Sec. 3.3 of the paper).

Each block applies *one* shared 3x3 convolution to every label channel, so the result
does not depend on the order of the labels (equivariance). The bottleneck variant adds
the maximum over labels before the activation.
"""
from __future__ import annotations

import torch
from torch import nn

ARCH_OPTIONS = {0: None, 1: "bottleneck", 2: "depthwise"}


def make_activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "lrelu": nn.LeakyReLU, "tanh": nn.Tanh}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]()


class LabelwiseBlock(nn.Module):
    """A 3x3 conv shared across label channels, optionally plus the max over labels."""

    def __init__(self, kind: str, activation: str = "lrelu"):
        super().__init__()
        if kind not in ("depthwise", "bottleneck"):
            raise ValueError(f"unknown block kind {kind!r}")
        self.kind = kind
        self.conv = nn.Conv2d(1, 1, kernel_size=3, padding=1)
        self.activation = make_activation(activation)

    def forward(self, logits: torch.Tensor, activate: bool = True) -> torch.Tensor:
        b, c, h, w = logits.shape
        out = self.conv(logits.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
        if self.kind == "bottleneck":
            out = out + logits.amax(dim=1, keepdim=True)
        return self.activation(out) if activate else out


class SpatialRegularization(nn.Module):
    """``arch_option`` 0: identity; 1: bottleneck blocks; 2: depthwise blocks.

    ``block_depth`` N applies the (single, weight-shared) block N times: N-1 times with the
    activation and a last time without it. Depth 0 still applies one block, as the
    official code does.
    """

    def __init__(self, arch_option: int = 0, block_depth: int = 0, activation: str = "lrelu"):
        super().__init__()
        if arch_option not in ARCH_OPTIONS:
            raise ValueError(f"arch_option must be 0, 1 or 2, not {arch_option!r}")
        kind = ARCH_OPTIONS[arch_option]
        self.block = LabelwiseBlock(kind, activation) if kind else None
        self.block_depth = int(block_depth)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.block is None:
            return logits
        for _ in range(max(self.block_depth - 1, 0)):
            logits = self.block(logits)
        return self.block(logits, activate=False)
