"""Seen/unseen splits of COCO for zero-shot detection and instance segmentation, and a COCO filter.

Two splits of the COCO class names are in use (``coco_zsi.json``, names in COCO category order):

- ``"48_17"`` (Bansal et al., ECCV 2018): 48 seen and 17 unseen classes; the remaining 15 COCO
  classes belong to neither and are dropped.
- ``"65_15"`` (Rahman et al., 2018): 65 seen and 15 unseen classes, all 80 used.

Both were checked against the dataset classes of the ZSI code (Zheng et al., CVPR 2021,
zhengye1995/Zero-shot-Instance-Segmentation). The ZSI test set keeps the val2014 images that hold
an unseen instance and only their unseen annotations (``filter_coco(gt, split["unseen"])``); the
generalized (GZSI) test set keeps seen and unseen classes (``filter_coco(gt, seen + unseen)``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...errors import ZerosegError
from .base import load_data

SPLITS = ("48_17", "65_15")


def coco_zsi_split(name: str) -> dict[str, Any]:
    """``{"seen": [names], "unseen": [names], "source": str}`` for split "48_17" or "65_15"."""
    splits = load_data("coco_zsi.json")["splits"]
    key = str(name).replace("/", "_")
    if key not in splits:
        raise ZerosegError(f"unknown COCO zero-shot split {name!r}; choose one of {', '.join(SPLITS)}")
    s = splits[key]
    return {"seen": list(s["seen"]), "unseen": list(s["unseen"]), "source": s["source"]}


def filter_coco(gt: dict[str, Any], keep_names: Iterable[str], drop_images_without: bool = True) -> dict[str, Any]:
    """A COCO-format dict restricted to the categories named in ``keep_names``.

    Keeps those categories (ids unchanged), their annotations (crowd ones included, so that
    COCOeval still ignores crowd regions) and, with ``drop_images_without``, only the images that
    hold at least one kept annotation. Other top-level keys ("info", "licenses", ...) are copied.
    ``gt`` is not modified. A name that is not a category of ``gt`` is a ZerosegError.
    """
    keep = list(dict.fromkeys(keep_names))
    try:
        categories = gt["categories"]
        by_name = {c["name"]: c for c in categories}
        unknown = [n for n in keep if n not in by_name]
        if unknown:
            raise ZerosegError(f"not categories of this COCO file: {', '.join(map(repr, unknown))}")
        ids = {by_name[n]["id"] for n in keep}
        annotations = [dict(a) for a in gt["annotations"] if a["category_id"] in ids]
        with_ann = {a["image_id"] for a in annotations}
        images = [dict(im) for im in gt["images"] if not drop_images_without or im["id"] in with_ann]
    except (KeyError, TypeError) as e:
        raise ZerosegError(f"not a COCO instance dict (needs images, annotations, categories): {e!r}") from None
    out = {k: v for k, v in gt.items() if k not in ("images", "annotations", "categories")}
    out["images"] = images
    out["annotations"] = annotations
    out["categories"] = [dict(c) for c in categories if c["id"] in ids]
    return out
