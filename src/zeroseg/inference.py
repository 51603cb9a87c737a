"""What semantic (``api.Segmenter``) and instance (``instance_segmenter.InstanceSegmenter``)
inference share: the device, the cached text encoder, images in, label checks and embeddings.

Each segmenter is a preprocess -> forward -> postprocess pipeline over these parts:
``as_rgb_array`` / ``image_to_tensor`` (any image -> uint8 array -> float tensor), ``embed``
(labels -> checked, cached, device-resident embeddings of the model's width), the network, and
the task's own postprocessing (label maps, or boxes and masks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .device import resolve_device
from .errors import ZerosegError
from .text.base import CachedTextEncoder, TextEncoder

__all__ = ["InferenceBase", "as_rgb_array", "image_to_tensor"]


def as_rgb_array(image) -> np.ndarray:
    """A path, PIL image or uint8 array -> uint8 [H, W, 3] (paths: EXIF orientation applied)."""
    from .io import load_image

    if isinstance(image, (str, Path)):
        image = load_image(image, upright=True)
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ZerosegError(f"expected an RGB image [H, W, 3], got shape {array.shape}")
    return array


def image_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]; a batch [B, H, W, 3] -> [B, 3, H, W]."""
    axes = (2, 0, 1) if array.ndim == 3 else (0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(axes), dtype=np.float32)) / 255.0


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
        from .io import parse_labels

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
