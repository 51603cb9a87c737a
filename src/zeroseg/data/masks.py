"""Binary masks as COCO run-length encoding (pycocotools), JSON-able (``counts`` is a ``str``).

Used by the instance annotations (``zeroseg.data.coco_instances``), the COCO-ZSI loader and the
instance metrics (``zeroseg.eval.coco_metrics``).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import ZerosegError

__all__ = ["encode_mask", "encode_masks", "decode_mask", "as_numpy"]


def as_numpy(x: Any) -> np.ndarray:
    """A numpy array from a numpy array, a sequence or a torch tensor (on any device)."""
    if hasattr(x, "detach"):  # a torch tensor; no torch import needed here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- masks


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs of bool/0-1 masks [N, H, W], counts as str."""
    from pycocotools import mask as mask_utils  # heavy

    if masks.ndim != 3:
        raise ZerosegError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants uint8 [H, W, N] in Fortran (column-major) order: COCO RLE runs down columns.
    data = np.asfortranarray(np.transpose(masks != 0, (1, 2, 0)).astype(np.uint8))
    rles = mask_utils.encode(data)
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary mask [H, W] (bool or 0/1) as COCO compressed RLE: {"size": [H, W], "counts": str}."""
    mask = as_numpy(mask)
    if mask.ndim != 2:
        raise ZerosegError(f"a mask must be [H, W], got shape {tuple(mask.shape)}")
    return encode_masks(mask[None])[0]


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed, counts str or bytes, or uncompressed, counts a list) -> bool [H, W]."""
    from pycocotools import mask as mask_utils  # heavy

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ZerosegError("an RLE mask must be a dict with 'size' and 'counts'")
    h, w = (int(s) for s in rle["size"])
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, h, w)  # uncompressed -> compressed
    elif isinstance(rle["counts"], str):
        rle = {"size": [h, w], "counts": rle["counts"].encode("ascii")}
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning (copy=False)
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)
