"""DPT parts (Ranftl et al., 2021) as LSeg uses them: readout, reassemble, fusion decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectReadout(nn.Module):
    """Concatenate the class token to every patch token and project back (``readout=project``)."""

    def __init__(self, dim: int, start_index: int = 1):
        super().__init__()
        self.start_index = start_index
        self.proj = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.start_index:]
        cls = tokens[:, :1].expand_as(patches)
        return self.proj(torch.cat((patches, cls), dim=-1))


class IgnoreReadout(nn.Module):
    def __init__(self, dim: int, start_index: int = 1):
        super().__init__()
        self.start_index = start_index

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.start_index:]


class AddReadout(nn.Module):
    def __init__(self, dim: int, start_index: int = 1):
        super().__init__()
        self.start_index = start_index

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.start_index:] + tokens[:, :1]


READOUTS = {"project": ProjectReadout, "ignore": IgnoreReadout, "add": AddReadout}


def make_resample(width: int, factor: float) -> nn.Module:
    """Change resolution by ``factor``: transposed conv up, identity, or strided 3x3 conv down."""
    if factor > 1:
        k = int(round(factor))
        return nn.ConvTranspose2d(width, width, kernel_size=k, stride=k)
    if factor == 1:
        return nn.Identity()
    return nn.Conv2d(width, width, kernel_size=3, stride=int(round(1 / factor)), padding=1)


class Reassemble(nn.Module):
    """Tokens [B, prefix+h*w, D] -> feature map [B, width, h*factor, w*factor]."""

    def __init__(self, dim: int, width: int, factor: float, readout: str = "project", start_index: int = 1):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {sorted(READOUTS)}")
        self.readout = READOUTS[readout](dim, start_index)
        self.conv = nn.Conv2d(dim, width, kernel_size=1)
        self.resample = make_resample(width, factor)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.readout(tokens).transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], grid[0], grid[1])
        return self.resample(self.conv(x))


class ResidualConvUnit(nn.Module):
    """relu -> conv -> bn -> relu -> conv -> bn, plus the input."""

    def __init__(self, features: int, use_bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=not use_bn)
        self.bn1 = nn.BatchNorm2d(features) if use_bn else nn.Identity()
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=not use_bn)
        self.bn2 = nn.BatchNorm2d(features) if use_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(F.relu(x)))
        out = self.bn2(self.conv2(F.relu(out)))
        return out + x


class FusionBlock(nn.Module):
    """Merge the coarser path with a lateral feature map, then upsample x2."""

    def __init__(self, features: int, use_bn: bool = True):
        super().__init__()
        self.lateral_unit = ResidualConvUnit(features, use_bn)
        self.merged_unit = ResidualConvUnit(features, use_bn)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, path: torch.Tensor, lateral: torch.Tensor | None = None) -> torch.Tensor:
        if lateral is not None:
            path = path + self.lateral_unit(lateral)
        path = self.merged_unit(path)
        path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class DPTDecoder(nn.Module):
    """Four feature maps at strides 4/8/16/32 -> one map of ``features`` channels at stride 2."""

    def __init__(self, in_widths: list[int], features: int = 256, use_bn: bool = True):
        super().__init__()
        if len(in_widths) != 4:
            raise ValueError(f"DPT needs 4 feature levels, got {len(in_widths)}")
        self.lateral = nn.ModuleList(
            nn.Conv2d(w, features, kernel_size=3, padding=1, bias=False) for w in in_widths
        )
        self.fusion = nn.ModuleList(FusionBlock(features, use_bn) for _ in in_widths)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        lateral = [conv(x) for conv, x in zip(self.lateral, levels)]
        path = self.fusion[3](lateral[3])
        for i in (2, 1, 0):
            path = self.fusion[i](path, lateral[i])
        return path
