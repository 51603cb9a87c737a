"""What semantic (``api.Segmenter``) and instance (``instance_segmenter.InstanceSegmenter``)
inference share: the device, the cached text encoder, images in, label checks and embeddings.

Each segmenter is a preprocess -> forward -> postprocess pipeline over these parts:
``as_rgb_array`` / ``image_to_tensor`` (any image -> uint8 array -> float tensor), ``embed``
(labels -> checked, cached, device-resident embeddings of the model's width), the network, and
the task's own postprocessing (label maps, or boxes and masks).
"""
from __future__ import annotations

import torch

from .device import resolve_device
from .errors import ZerosegError
from .images import as_rgb_array, image_to_tensor  # noqa: F401  (part of this API)
from .io import parse_labels
from .text.base import CachedTextEncoder, TextEncoder

__all__ = ["InferenceBase", "as_rgb_array", "image_to_tensor"]


class InferenceBase:
    """A network in eval mode on a device, with its frozen text encoder (cached per label)."""

    def __init__(self, model, text_encoder: TextEncoder, source: str = "", device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.text_encoder = text_encoder if isinstance(text_encoder, CachedTextEncoder) \
            else CachedTextEncoder(text_encoder)
        self.source = source

    as_rgb_array = staticmethod(as_rgb_array)

    @property
    def embed_dim(self) -> int | None:
        """The width the network's text side expects (None: not recorded)."""
        return getattr(getattr(self.model, "config", None), "embed_dim", None)

    @staticmethod
    def check_labels(labels) -> list[str]:
        """The label names, stripped; empty, blank or duplicate labels are errors."""

        return parse_labels([str(label) for label in labels])

    def embed(self, labels: list[str]) -> torch.Tensor:
        """[C, D] float embeddings of ``labels`` on the device, D checked against the network."""
        if not labels:
            raise ZerosegError("empty label set")
        emb = self.text_encoder.encode(list(labels)).float()
        if self.embed_dim is not None and emb.shape[1] != self.embed_dim:
            raise ZerosegError(f"text encoder gives {emb.shape[1]}-d embeddings but the model expects "
                               f"{self.embed_dim}")
        return emb.to(self.device)
