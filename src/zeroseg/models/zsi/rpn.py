"""BA-RPN: the background-aware region proposal head of ZSI.

The RPN's objectness branch maps each anchor's feature into the semantic space and scores it
against two learned vectors, foreground v_f and background v_b. A two-way softmax over those
two scores equals a sigmoid of their difference, which is exactly the single objectness logit
torchvision's RPN expects, so the proposal machinery (anchors, matching, NMS, loss) is reused
unchanged. v_b is the model's background embedding (see synchronized background in model.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BackgroundAwareRPNHead(nn.Module):
    """Drop-in for ``torchvision.models.detection.rpn.RPNHead`` (same inputs and outputs)."""

    def __init__(self, in_channels: int, num_anchors: int, embed_dim: int):
        super().__init__()
        self.num_anchors = num_anchors
        self.embed_dim = embed_dim
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.semantic = nn.Conv2d(in_channels, num_anchors * embed_dim, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        self.foreground = nn.Parameter(F.normalize(torch.randn(embed_dim), dim=0))
        self.background = nn.Parameter(F.normalize(torch.randn(embed_dim), dim=0))
        for layer in (self.conv, self.semantic, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def background_embedding(self) -> torch.Tensor:
        """V_b, L2-normalized like the text embeddings it sits beside."""
        return F.normalize(self.background, dim=0)

    def semantic_features(self, feature: torch.Tensor) -> torch.Tensor:
        """Per-anchor semantic features [N, A, D, H, W] of one FPN level (for inspection)."""
        t = F.relu(self.conv(feature))
        n, _, h, w = t.shape
        return self.semantic(t).view(n, self.num_anchors, self.embed_dim, h, w)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # objectness = <s, v_f> - <s, v_b> = <W t + b, d> with d = v_f - v_b: the 1x1 semantic conv
        # and the dot product fold into one 1x1 conv with weights W^T d per anchor, so the
        # [A * D, H, W] semantic map is never materialized (same function, a fraction of the cost).
        d = F.normalize(self.foreground, dim=0) - self.background_embedding()
        weight = self.semantic.weight.view(self.num_anchors, self.embed_dim, -1)
        folded_w = torch.einsum("adc,d->ac", weight, d)[:, :, None, None]
        folded_b = self.semantic.bias.view(self.num_anchors, self.embed_dim) @ d
        objectness, deltas = [], []
        for feature in features:
            t = F.relu(self.conv(feature))
            objectness.append(F.conv2d(t, folded_w, folded_b))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas
