"""Images in memory: any image -> uint8 RGB array -> float tensor (one conversion for inference
and training alike)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ZerosegError
from .io import load_image

__all__ = ["as_rgb_array", "image_to_tensor"]


def as_rgb_array(image) -> np.ndarray:
    """A path, PIL image or uint8 array -> uint8 [H, W, 3] (paths: EXIF orientation applied)."""

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
