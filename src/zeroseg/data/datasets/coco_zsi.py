"""Seen/unseen splits of COCO for zero-shot detection and instance segmentation, and a COCO filter.

Two splits of the COCO class names are in use (``coco_zsi.json``, names in COCO category order):

- ``"48_17"`` (Bansal et al., ECCV 2018): 48 seen and 17 unseen classes; the remaining 15 COCO
  classes belong to neither and are dropped.
- ``"65_15"`` (Rahman et al., 2018): 65 seen and 15 unseen classes, all 80 used.

Both were checked against the dataset classes of the ZSI code (Zheng et al., CVPR 2021,
zhengye1995/Zero-shot-Instance-Segmentation). The ZSI test set keeps the val2014 images that hold
an unseen instance and only their unseen annotations (``filter_coco(gt, split["unseen"])``); the
generalized (GZSI) test set keeps seen and unseen classes (``filter_coco(gt, seen + unseen)``).

:class:`CocoZsiInstances` reads COCO 2014 itself (images and instance masks) for one part of a split:
the seen classes for training (images showing an unseen class dropped), the unseen ones or both for
evaluation.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from ...errors import ZerosegError
from ...io import load_image
from ..masks import decode_mask
from .base import load_data, read_coco_json

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


# --------------------------------------------------------------------------- training / validation loader

PARTS = ("seen", "unseen", "all")
_COCO_SPLITS = ("train", "val")
_LAYOUT = ("ROOT/annotations/instances_{train,val}2014.json (COCO instance format, with the split's category "
           "names) + ROOT/{train,val}2014/<file_name> (images)")


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list, compressed or uncompressed RLE) as a bool mask [height, width].

    Polygons are rasterized by pycocotools (an axis-aligned rectangle with integer corners
    ``x0..x1``, ``y0..y1`` fills columns ``x0..x1-1`` and rows ``y0..y1-1``); several are merged.
    Raises ValueError / TypeError / KeyError on malformed input (the caller names the annotation).
    """
    try:
        from pycocotools import mask as mask_utils  # heavy
    except ImportError:
        raise ZerosegError("decoding COCO masks needs pycocotools: pip install pycocotools") from None


    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), bool)
        if any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in segmentation):
            raise ValueError("a polygon needs at least 3 (x, y) points")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        return decode_mask(rle)
    if not isinstance(segmentation, dict):
        raise TypeError(f"segmentation is a {type(segmentation).__name__}, not a polygon list or an RLE dict")
    size = [int(s) for s in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(f"RLE size {size[1]}x{size[0]} differs from the image size {width}x{height}")
    return decode_mask(segmentation)


def mask_box(mask: np.ndarray) -> list[float]:
    """The tight box of a non-empty bool mask [H, W] as [x1, y1, x2, y2] in pixel edges (x2 = last column + 1)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


class CocoZsiInstances(torch.utils.data.Dataset):
    """COCO 2014 instances restricted to one part of a zero-shot split, for training and evaluating ZSI models.

    On disk (``annotations`` / ``images`` override the two relative paths; ``root`` may also be a
    folder holding ``COCO2014/``)::

        root/annotations/instances_{train,val}2014.json
        root/{train,val}2014/<file_name of each image>

    ``part`` chooses the classes and images:

    - ``"seen"`` (training; Bansal et al.'s protocol): every image holding an annotation of an
      unseen class is dropped (crowd annotations included: a crowd of unseen objects still shows
      them), then only seen annotations are kept;
    - ``"unseen"``: unseen annotations only (the ZSI test set when ``split="val"``);
    - ``"all"``: seen and unseen annotations (the GZSI test set when ``split="val"``).

    Classes of neither list (the 15 COCO classes outside the 48/17 split) are ignored. Crowd
    annotations are never instances. An image is kept when at least one non-crowd annotation of the
    part has a positive ``area`` (COCO computes it from the mask); at read time instances whose mask
    decodes empty are skipped. Images are in image-id order.

    Items: ``ds[i] -> (image float [3, H, W] in [0, 1], {"boxes" float [N, 4] xyxy, "labels" int64 [N]
    = 1 + position in names, "masks" uint8 [N, H, W]})``. With ``hflip``, image, masks and boxes are
    flipped when ``np.random.default_rng([seed, epoch, i]).random() < 0.5`` (the same draw in any
    worker); :meth:`set_epoch` changes the epoch. The JSON is parsed once here; images and masks are
    decoded per item.
    """

    name = "coco_zsi"
    layout = _LAYOUT

    names: list[str]
    category_ids: list[int]

    def __init__(self, root: str | Path, split: str = "train", zsi_split: str = "48_17", part: str = "seen", *,
                 annotations: str | Path | None = None, images: str | Path | None = None, hflip: bool = False,
                 seed: int = 0) -> None:
        """Open ``split`` ("train" or "val") of COCO 2014 at ``root`` for ``part`` of ``zsi_split`` (see the class)."""
        if split not in _COCO_SPLITS:
            raise self.error(f"unknown split {split!r}; choose one of {', '.join(_COCO_SPLITS)}")
        if part not in PARTS:
            raise self.error(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        zs = coco_zsi_split(zsi_split)
        self.split, self.zsi_split, self.part = split, str(zsi_split).replace("/", "_"), part
        self.seen, self.unseen = zs["seen"], zs["unseen"]
        self.names = {"seen": self.seen, "unseen": self.unseen, "all": self.seen + self.unseen}[part]
        self.hflip, self.seed, self.epoch = bool(hflip), int(seed), 0

        root = Path(root)
        if not root.is_dir():
            raise self.error(f"dataset root not found: {root}")
        if annotations is None and images is None and not (root / "annotations").is_dir() \
                and (root / "COCO2014" / "annotations").is_dir():
            root = root / "COCO2014"
        self.annotation_file = root / (annotations if annotations is not None
                                       else Path("annotations") / f"instances_{split}2014.json")
        self.image_dir = root / (images if images is not None else f"{split}2014")
        if not self.annotation_file.is_file():
            raise self.error(f"annotation file not found: {self.annotation_file}")
        if not self.image_dir.is_dir():
            raise self.error(f"image folder not found: {self.image_dir}")
        self._index(read_coco_json(self.annotation_file, self.error))

    # ------------------------------------------------------------------ annotations

    def _index(self, gt: dict[str, Any]) -> None:
        """Keep the part's images and, per image, its (class position, segmentation) list."""
        try:
            id_of = {c["name"]: int(c["id"]) for c in gt["categories"]}
            missing = [n for n in self.seen + self.unseen if n not in id_of]
            if missing:
                raise self.error(f"{self.annotation_file} lacks categories of split {self.zsi_split}: "
                                 f"{', '.join(map(repr, missing))}")
            self.category_ids = [id_of[n] for n in self.names]
            position = {cid: k for k, cid in enumerate(self.category_ids)}
            unseen_ids = {id_of[n] for n in self.unseen}
            known_cats = set(id_of.values())
            meta = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"]))
                    for im in gt["images"]}
            kept: dict[int, list[tuple[int, int, Any]]] = {}
            has_instance: set[int] = set()
            shows_unseen: set[int] = set()
            for ann in gt["annotations"]:
                image_id, cat = int(ann["image_id"]), int(ann["category_id"])
                if image_id not in meta or cat not in known_cats:
                    raise self.error(f"annotation {ann.get('id')} in {self.annotation_file} refers to an "
                                     "unknown image or category")
                if cat in unseen_ids:
                    shows_unseen.add(image_id)
                if cat not in position or ann.get("iscrowd", 0):
                    continue
                kept.setdefault(image_id, []).append((int(ann.get("id", 0)), position[cat], ann["segmentation"]))
                if float(ann.get("area", 1.0)) > 0:
                    has_instance.add(image_id)
        except (KeyError, TypeError, ValueError) as e:
            raise self.error(f"malformed COCO instance file {self.annotation_file}: {e!r}") from None
        if self.part == "seen":
            has_instance -= shows_unseen
        ids = sorted(has_instance)
        self._images = [(image_id, *meta[image_id]) for image_id in ids]
        # Annotation-id order: the same instance order whatever the order in the file.
        self._anns = [[(pos, seg) for _, pos, seg in sorted(kept[image_id], key=lambda a: a[0])]
                      for image_id in ids]

    # ------------------------------------------------------------------ items

    def __len__(self) -> int:
        return len(self._images)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose flips ``ds[i]`` draws (call it before each training epoch)."""
        self.epoch = int(epoch)

    def image_id(self, i: int) -> int:
        """The COCO image id of item ``i``."""
        return self._images[self._check(i)][0]

    def _check(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset indices are integers, got {type(i).__name__}")
        n = len(self._images)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {self.name} ({n} images)")
        return int(i) % n

    def load(self, i: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """Item ``i`` unflipped: ``(image uint8 [H, W, 3], [(class position in names, bool mask [H, W]), ...])``.

        Instances are in annotation-id order; those whose mask is empty are left out.
        """

        i = self._check(i)
        image_id, file_name, h, w = self._images[i]
        path = self.image_dir / file_name
        try:
            image = load_image(path)
        except ZerosegError as e:
            raise self.error(str(e)) from None
        if image.shape[:2] != (h, w):
            raise self.error(f"image {path} is {image.shape[1]}x{image.shape[0]} but "
                             f"{self.annotation_file} says {w}x{h}")
        instances = []
        for pos, seg in self._anns[i]:
            try:
                mask = decode_segmentation(seg, h, w)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise self.error(f"unreadable segmentation of a {self.names[pos]!r} annotation of image "
                                 f"{image_id} in {self.annotation_file}: {e}") from None
            if mask.any():
                instances.append((pos, mask))
        return image, instances

    def flips(self, i: int) -> bool:
        """Whether ``ds[i]`` is flipped in the current epoch."""
        i = self._check(i)
        return self.hflip and bool(np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Item ``i`` as ``(image float [3, H, W] in [0, 1], {"boxes", "labels", "masks"})`` (see the class)."""
        image, instances = self.load(i)
        h, w = image.shape[:2]
        masks = np.stack([m for _, m in instances]) if instances else np.zeros((0, h, w), bool)
        if self.flips(i):
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        boxes = [mask_box(m) for m in masks]  # from the (flipped) masks: boxes and masks always agree
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        return x, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.tensor([pos + 1 for pos, _ in instances], dtype=torch.int64),
                   "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))}

    def error(self, message: str) -> ZerosegError:
        """A one-line ZerosegError that names this dataset and its expected layout."""
        return ZerosegError(f"{self.name}: {message}; expected layout: {self.layout}")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} split={self.split} zsi_split={self.zsi_split} part={self.part} "
                f"classes={len(self.names)} images={len(self)}>")
