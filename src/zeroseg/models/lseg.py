"""LSeg (Li et al., ICLR 2022): dense image embeddings scored against text embeddings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SpatialRegularization
from .dpt import DPTDecoder
from .encoders import ResNetEncoder, TimmConvEncoder, ViTEncoder


@dataclass
class LSegConfig:
    """Everything needed to rebuild an LSeg network; stored as JSON beside the weights."""

    encoder: str = "vit"  # vit | resnet | timm
    backbone: str = "vit_base_patch32_384"  # timm (vit, timm) or torchvision (resnet) model name
    hooks: list[int] | None = None  # ViT blocks whose outputs feed the decoder
    widths: list[int] | None = None  # reassemble widths (ViT); read off the backbone otherwise
    readout: str = "project"
    features: int = 256
    embed_dim: int = 512
    text_encoder: str = "clip:ViT-B-32"
    arch_option: int = 0
    block_depth: int = 0
    activation: str = "lrelu"
    logit_scale: float = 1 / 0.07
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    backbone_kwargs: dict = field(default_factory=dict)
    input_size: int = 480  # default short side at inference (pixels)
    edge_head: bool = False  # SAZS boundary head on the decoder features (trained with an edge loss)
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "LSegConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown LSeg config fields: {sorted(unknown)}")
        _check_types(d)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


_FIELD_TYPES = {"encoder": str, "backbone": str, "readout": str, "text_encoder": str, "activation": str,
                "description": str, "features": int, "embed_dim": int, "arch_option": int, "block_depth": int,
                "input_size": int, "logit_scale": (int, float), "edge_head": bool, "backbone_kwargs": dict,
                "mean": list, "std": list, "hooks": (list, type(None)), "widths": (list, type(None))}


def _check_types(d: dict) -> None:
    """A config read from a file must have the field types the network code expects."""
    for key, value in d.items():
        want = _FIELD_TYPES.get(key)
        if want is None:
            continue
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if ok and key in ("mean", "std"):
            ok = len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if ok and key in ("hooks", "widths") and value is not None:
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise TypeError(f"config field {key!r} has the wrong type ({type(value).__name__}: {value!r:.40})")


def build_image_encoder(cfg: LSegConfig) -> nn.Module:
    if cfg.encoder == "vit":
        import timm  # heavy

        vit = timm.create_model(cfg.backbone, pretrained=False, **cfg.backbone_kwargs)
        hooks = cfg.hooks or _spread_hooks(len(vit.blocks))
        widths = cfg.widths or [vit.embed_dim // 8, vit.embed_dim // 4, vit.embed_dim // 2, vit.embed_dim]
        return ViTEncoder(vit, hooks, widths, cfg.readout)
    if cfg.encoder == "resnet":
        import torchvision  # heavy

        return ResNetEncoder(getattr(torchvision.models, cfg.backbone)(weights=None, **cfg.backbone_kwargs))
    if cfg.encoder == "timm":
        return TimmConvEncoder(cfg.backbone, **cfg.backbone_kwargs)
    raise ValueError(f"unknown encoder kind {cfg.encoder!r}; expected vit, resnet or timm")


def _spread_hooks(depth: int) -> list[int]:
    """Four evenly spaced blocks ending with the last one (e.g. 12 -> 2, 5, 8, 11)."""
    return [depth * (i + 1) // 4 - 1 for i in range(4)]


def upsample_logits(logits: torch.Tensor) -> torch.Tensor:
    """Half-resolution logits [B, C, h, w] -> the input's resolution [B, C, 2h, 2w] (the official
    LSeg head's bilinear x2, corners aligned)."""
    return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)


class BoundaryHead(nn.Module):
    """A light head predicting label boundaries from decoder features (SAZS's edge branch)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv = nn.Conv2d(features, max(features // 2, 8), kernel_size=3, padding=1)
        self.out = nn.Conv2d(max(features // 2, 8), 1, kernel_size=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        edges = self.out(F.relu(self.conv(feats)))
        return F.interpolate(edges, scale_factor=2, mode="bilinear", align_corners=True)


class LSegNet(nn.Module):
    """Image -> per-pixel embeddings; logits = scale * cosine(pixel, label) -> spatial reg. -> x2."""

    def __init__(self, cfg: LSegConfig):
        super().__init__()
        self.config = cfg
        self.image_encoder = build_image_encoder(cfg)
        self.decoder = DPTDecoder(self.image_encoder.widths, cfg.features)
        self.head = nn.Conv2d(cfg.features, cfg.embed_dim, kernel_size=1)
        self.spatial_reg = SpatialRegularization(cfg.arch_option, cfg.block_depth, cfg.activation)
        self.edge_head = BoundaryHead(cfg.features) if cfg.edge_head else None
        self.logit_scale = float(cfg.logit_scale)

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this."""
        return self.image_encoder.stride

    def decoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused decoder features [B, features, H/2, W/2]."""
        return self.decoder(self.image_encoder(x))

    def pixel_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalized pixel embeddings [B, embed_dim, H/2, W/2]."""
        return F.normalize(self.head(self.decoder_features(x)), dim=1)

    def score(self, pixels: torch.Tensor, text: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        """Logits from normalized pixel embeddings and text embeddings [C, D]: at the input's
        resolution, or with ``upsample=False`` at the embeddings' (half of it; ``upsample_logits``
        finishes them), which lets per-pixel work on many labels run on a quarter of the pixels."""
        text = F.normalize(text.to(pixels.dtype), dim=-1)
        logits = self.logit_scale * torch.einsum("bdhw,cd->bchw", pixels, text)
        logits = self.spatial_reg(logits)
        return upsample_logits(logits) if upsample else logits

    def add_edge_head(self) -> None:
        """Give a model without one a (fresh) boundary head, e.g. to fine-tune with the edge loss."""
        if self.edge_head is None:
            self.edge_head = BoundaryHead(self.config.features)
            self.config.edge_head = True

    def forward(self, x: torch.Tensor, text: torch.Tensor, with_edges: bool = False, upsample: bool = True):
        """``x``: normalized images [B, 3, H, W]; ``text``: label embeddings [C, D] -> [B, C, H, W]
        (``upsample=False``: [B, C, H/2, W/2], see ``score``).

        ``with_edges=True`` also returns boundary logits [B, 1, H, W] (needs ``edge_head``).
        """
        feats = self.decoder_features(x)
        logits = self.score(F.normalize(self.head(feats), dim=1), text, upsample=upsample)
        if not with_edges:
            return logits
        if self.edge_head is None:
            raise ValueError("this model has no edge head (config edge_head=false)")
        return logits, self.edge_head(feats)
