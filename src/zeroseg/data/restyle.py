"""Re-render a synthetic split in other drawing styles: a check that a model learned objects.

The same scenes and masks, with the artwork's look changed in ways OpenMoji never shows:
``recolor`` (hue turned by a third of the circle, saturation x1.5), ``blur`` (Gaussian,
radius 2), ``outline`` (a 5x5 min filter: pen strokes several pixels thicker) and ``all``
(the three in turn). These are stronger than, and partly unlike, the training-time style
augmentation (``style_augment``: channel shuffle, grayscale, radius <= 1.5 blur, 3x3 filters).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import ZerosegError
from ..io import atomic_path

STYLES = ("recolor", "blur", "outline", "all")

__all__ = ["STYLES", "restyle_image", "restyle_split"]


def _recolor(img: Image.Image) -> Image.Image:
    h, s, v = (np.asarray(c, dtype=np.int32) for c in img.convert("HSV").split())
    h = ((h + 85) % 256).astype(np.uint8)
    s = np.clip(s * 1.5, 0, 255).astype(np.uint8)
    hsv = Image.merge("HSV", [Image.fromarray(c) for c in (h, s, v.astype(np.uint8))])
    return hsv.convert("RGB")


def restyle_image(image: Image.Image, style: str) -> Image.Image:
    """``image`` (RGB) in ``style``; deterministic."""
    if style not in STYLES:
        raise ZerosegError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    img = image.convert("RGB")
    if style in ("recolor", "all"):
        img = _recolor(img)
    if style in ("blur", "all"):
        img = img.filter(ImageFilter.GaussianBlur(2.0))
    if style in ("outline", "all"):
        img = img.filter(ImageFilter.MinFilter(5))
    return img


def restyle_split(data_dir: str | Path, out_dir: str | Path, style: str, split: str = "test") -> Path:
    """A dataset folder whose ``split`` holds ``data_dir``'s scenes re-rendered in ``style``.

    Masks are copied unchanged; ``index.json`` keeps only ``split`` (so nothing else is read).
    """
    src, out = Path(data_dir), Path(out_dir)
    index = json.loads((src / "index.json").read_text())
    entries = index["splits"].get(split)
    if not entries:
        raise ZerosegError(f"{src} has no {split!r} split")
    for e in entries:
        for key in ("image", "mask"):
            (out / e[key]).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / e["image"]) as tmp:
            restyle_image(Image.open(src / e["image"]), style).save(tmp, format="PNG")
        shutil.copyfile(src / e["mask"], out / e["mask"])
    index = {**index, "splits": {split: entries}, "restyled": style}
    index.pop("instances", None)
    with atomic_path(out / "index.json") as tmp:
        Path(tmp).write_text(json.dumps(index))
    return out
