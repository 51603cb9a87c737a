"""Image encoders: each turns an image into four feature maps at strides 4, 8, 16 and 32.

- ``ViTEncoder``: a timm VisionTransformer, hooks on chosen blocks, DPT reassemble.
- ``ResNetEncoder``: a torchvision ResNet (the image encoder of LSeg's zero-shot models).
- ``TimmConvEncoder``: any timm convnet through ``features_only``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dpt import Reassemble
from .pretrained import load_backbone_weights

LEVEL_STRIDES = (4, 8, 16, 32)


class ViTEncoder(nn.Module):
    def __init__(self, vit: nn.Module, hooks: list[int], widths: list[int], readout: str = "project"):
        super().__init__()
        if len(hooks) != 4 or len(widths) != 4:
            raise ValueError("ViTEncoder needs 4 hooks and 4 widths")
        self.backbone = vit
        self.hooks = [int(h) for h in hooks]
        self.widths = list(widths)
        self.patch = int(vit.patch_embed.patch_size[0])
        self.prefix = int(getattr(vit, "num_prefix_tokens", 1))
        dim = int(vit.embed_dim)
        self.reassemble = nn.ModuleList(
            Reassemble(dim, w, self.patch / s, readout, self.prefix) for w, s in zip(widths, LEVEL_STRIDES)
        )

    @property
    def stride(self) -> int:
        return max(32, self.patch)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The learned position embedding resized (bilinearly) to a ``grid`` of patches."""
        pos = self.backbone.pos_embed
        prefix, patches = pos[:, : self.prefix], pos[0, self.prefix:]
        side = int(math.sqrt(patches.shape[0]))
        patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat([prefix, patches], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        vit = self.backbone
        b, _, h, w = x.shape
        grid = (h // self.patch, w // self.patch)
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        prefix = [vit.cls_token.expand(b, -1, -1)]
        if getattr(vit, "reg_token", None) is not None:
            prefix.append(vit.reg_token.expand(b, -1, -1))
        tokens = torch.cat(prefix + [tokens], dim=1) + self.position_embedding(grid)
        tokens = vit.norm_pre(vit.pos_drop(tokens))
        hooked = []
        for i, block in enumerate(vit.blocks):
            tokens = block(tokens)
            if i in self.hooks:
                hooked.append(tokens)
            if i == self.hooks[-1]:
                break  # later blocks cannot change the hooked outputs
        return [r(t, grid) for r, t in zip(self.reassemble, hooked)]


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its pooling and classifier."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.backbone = nn.Module()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self.backbone, name, getattr(resnet, name))
        # the last block's last BatchNorm tells the width (Bottleneck: bn3, BasicBlock: bn2)
        self.widths = [_out_width(getattr(self.backbone, f"layer{i}")[-1]) for i in (1, 2, 3, 4)]
        self.stride = 32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.backbone
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        out = []
        for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
            x = layer(x)
            out.append(x)
        return out


def _out_width(block: nn.Module) -> int:
    return (getattr(block, "bn3", None) or block.bn2).num_features


class TimmConvEncoder(nn.Module):
    """Any timm model with ``features_only`` levels at reductions 4, 8, 16 and 32.

    ``pretrained``: a registered tag (``imagenet``, see ``zeroseg.models.pretrained``) or a local
    weights file, loaded into the backbone (never downloaded); ``None``: random init.
    """

    def __init__(self, name: str, pretrained: str | None = None, **kwargs):
        super().__init__()
        import timm  # heavy

        probe = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        reductions = probe.feature_info.reduction()
        try:
            indices = [reductions.index(s) for s in LEVEL_STRIDES]
        except ValueError:
            raise ValueError(f"timm model {name!r} has feature reductions {reductions}; "
                             f"LSeg needs levels at {list(LEVEL_STRIDES)}") from None
        self.backbone = timm.create_model(name, pretrained=False, features_only=True,
                                          out_indices=tuple(indices), **kwargs)
        self.widths = list(self.backbone.feature_info.channels())
        self.stride = 32
        if pretrained:
            load_backbone_weights(self, name, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(x))
