"""ZSI's semantic heads: box and mask predictors that score against class embeddings.

Both map visual features into the text encoder's space with an encoder (T_e for boxes, a 1x1
conv E for masks), score them against a fixed matrix of class embeddings (row 0: background),
and map the semantic features back with a decoder (T_d, a 1x1 conv) whose reconstruction error
L_R keeps the semantic features informative about the visual ones (Zheng et al., CVPR 2021).
The class embeddings are an argument of ``forward``, never parameters: the same trained head
scores seen classes in training and any label set at test time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def semantic_scores(semantic: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """Scores [..., K] = semantic [..., D] . class_embeddings[K, D]^T (embeddings L2-normalized rows)."""
    return semantic @ class_embeddings.t()


class SemanticBoxPredictor(nn.Module):
    """RoI feature -> (class logits [N, K], class-agnostic box deltas repeated to [N, 4K], L_R).

    torchvision's Fast R-CNN loss and post-processing index per-class deltas, so the single
    class-agnostic regression is repeated for every class: identical to sharing one regressor.
    """

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.encoder = nn.Linear(in_channels, embed_dim)  # T_e
        self.decoder = nn.Linear(embed_dim, in_channels)  # T_d
        self.bbox_pred = nn.Linear(in_channels, 4)

    def forward(self, x: torch.Tensor, class_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        semantic = self.encoder(x)
        logits = semantic_scores(semantic, class_embeddings)
        deltas = self.bbox_pred(x).repeat(1, class_embeddings.shape[0])
        reconstruction = F.mse_loss(self.decoder(semantic), x) if x.numel() else x.sum() * 0
        return logits, deltas, reconstruction


class SemanticMaskPredictor(nn.Module):
    """Mask features [N, C, 14, 14] -> per-pixel class logits at 28 x 28, and L_R.

    The 2x deconvolution of Mask R-CNN, then E (1x1 conv to the semantic space), a 1x1 conv
    whose weights are the class embeddings (fixed, passed in) and the symmetric decoder (1x1).

    Mask R-CNN only ever reads the channel of each RoI's own class (its loss, its inference),
    so with ``labels`` given the two 1x1 convs are folded into one per RoI: weights
    E^T e_label, bias b_E . e_label. Same numbers as the full map's label channel, without
    the [N, D, 28, 28] semantic map or the [N, K, 28, 28] scores (a large saving for many labels).
    """

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.encoder = nn.Conv2d(in_channels, embed_dim, 1)  # E
        self.decoder = nn.Conv2d(embed_dim, in_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                with_reconstruction: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, K, 28, 28], or [N, 1, 28, 28] for ``labels`` [N]; L_R, 0 if not asked for)."""
        visual = F.relu(self.upsample(x))
        semantic = self.encoder(visual) if (labels is None or with_reconstruction) else None
        if labels is None:
            logits = F.conv2d(semantic, class_embeddings[:, :, None, None])
        else:
            rows = class_embeddings[labels]  # [N, D]
            weight = rows @ self.encoder.weight.flatten(1)  # [N, C]
            bias = rows @ self.encoder.bias
            logits = (torch.einsum("nchw,nc->nhw", visual, weight) + bias[:, None, None])[:, None]
        if with_reconstruction and visual.numel():
            reconstruction = F.mse_loss(self.decoder(semantic), visual)
        else:
            reconstruction = visual.sum() * 0
        return logits, reconstruction
