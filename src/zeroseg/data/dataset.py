"""Reading a segmentation dataset in zeroseg's on-disk format (docs/CONTRACTS.md).

One reader for every consumer: training (seen classes only), evaluation and the synthetic
generator's own checks. Anything malformed is a one-line ``ZerosegError`` naming the layout.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ZerosegError

FORMAT = "zeroseg-synth/1"
from ..io import load_image
from ..labels import IGNORE_INDEX, OTHER  # noqa: F401  (re-exported: the dataset API names them)

LAYOUT = "DIR/index.json and DIR/{train,val,test}/{images,masks}/<id>.png"


@dataclass(frozen=True)
class DatasetIndex:
    """A dataset directory's ``index.json``: classes (0 = "other"), seen/unseen names, splits."""

    root: Path
    classes: list[str]
    seen: list[str]
    unseen: list[str]
    splits: dict[str, list[dict]]
    meta: dict = field(default_factory=dict)

    @classmethod
    def read(cls, root: str | os.PathLike[str]) -> "DatasetIndex":
        root = Path(root)
        if root.is_file() and root.name == "index.json":  # accept the index file itself
            root = root.parent
        path = root / "index.json"
        layout = LAYOUT.replace("DIR", str(root))
        if not root.exists():
            raise ZerosegError(f"data directory not found: {root} (expected {layout}; "
                               f"create one with `zeroseg data synth --out {root}`)")
        if not path.is_file():
            raise ZerosegError(f"not a zeroseg dataset (no index.json) at {root}: expected {layout} "
                               f"(create one with `zeroseg data synth --out {root}`)")
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ZerosegError(f"{path} is not a {FORMAT} index (malformed JSON: {e})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            fmt = index.get("format") if isinstance(index, dict) else None
            raise ZerosegError(f"{path} is not a {FORMAT} index (unknown format {fmt!r}): expected {layout}")
        names = {k: index.get(k) for k in ("classes", "seen", "unseen")}
        for key, value in names.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ZerosegError(f"malformed {path}: {key!r} must be a list of names")
        classes, seen, unseen = names["classes"], names["seen"], names["unseen"]
        if not classes or classes[0] != OTHER:
            raise ZerosegError(f"malformed {path}: classes must start with {OTHER!r}")
        if len(set(classes)) != len(classes):
            raise ZerosegError(f"malformed {path}: duplicate class names")
        bad = [n for n in seen + unseen if n not in classes or n == OTHER] or sorted(set(seen) & set(unseen))
        if bad:
            raise ZerosegError(f"malformed {path}: seen/unseen must be disjoint class names other than "
                               f"{OTHER!r} (bad: {', '.join(bad[:3])})")
        splits = index.get("splits")
        if not isinstance(splits, dict):
            raise ZerosegError(f"malformed {path}: no 'splits'")
        for split, entries in splits.items():
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("mask"), str)
                    for e in entries):
                raise ZerosegError(f"malformed {path}: split {split!r} entries need 'image' and 'mask'")
        meta = {k: v for k, v in index.items() if k not in ("classes", "seen", "unseen", "splits")}
        return cls(root, list(classes), list(seen), list(unseen), splits, meta)

    def entries(self, split: str) -> list[dict]:
        if split not in self.splits:
            raise ZerosegError(f"unknown split {split!r} in {self.root / 'index.json'}; "
                               f"expected one of {', '.join(self.splits) or 'none'}")
        return self.splits[split]

    def class_id(self, name: str) -> int:
        return self.classes.index(name)

    def load_mask(self, entry: dict) -> np.ndarray:
        """Ground truth int64 [H, W]: indices into ``classes`` (``IGNORE_INDEX`` allowed)."""
        from PIL import Image, UnidentifiedImageError  # heavy

        path = self.root / entry["mask"]
        if not path.is_file():
            raise ZerosegError(f"mask not found: {path}")
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise ZerosegError(f"mask {path} must be a palette PNG, got mode {im.mode}")
                mask = np.asarray(im, dtype=np.uint8).astype(np.int64)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ZerosegError(f"corrupt mask {path}: {e}") from None
        bad = (mask >= len(self.classes)) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ZerosegError(f"mask {path} has value {int(mask[bad][0])} but there are {len(self.classes)} classes")
        return mask

    def load(self, entry: dict) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], ground truth int64 [H, W])."""

        image = load_image(self.root / entry["image"])
        mask = self.load_mask(entry)
        if image.shape[:2] != mask.shape:
            raise ZerosegError(f"mask {self.root / entry['mask']} is {mask.shape}, image is {image.shape[:2]}")
        return image, mask


class SynthDataset:
    """One split: ``ds[i] -> (image uint8 [H,W,3], label_map int64 [H,W], classes)``.

    Label values index ``ds.classes`` (0 = "other"). Attributes: ``classes``, ``seen``,
    ``unseen``, ``entries`` (the split's list from index.json), ``root``, ``split``, ``index``.
    """

    def __init__(self, root: str | os.PathLike[str], split: str) -> None:
        self.index = DatasetIndex.read(root)
        self.root = self.index.root
        self.split = split
        self.entries: list[dict[str, Any]] = self.index.entries(split)
        self.classes, self.seen, self.unseen = self.index.classes, self.index.seen, self.index.unseen
        self.image_size: int = int(self.index.meta.get("image_size", 0))
        self.class_list_version: str = str(self.index.meta.get("class_list_version", ""))

    def __len__(self) -> int:
        return len(self.entries)

    def class_id(self, name: str) -> int:
        return self.index.class_id(name)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, ground truth) of entry ``i``."""
        return self.index.load(self.entries[i])

    def load_mask(self, i: int) -> np.ndarray:
        return self.index.load_mask(self.entries[i])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images in split {self.split!r}")
        return (*self.load(i), self.classes)

    def __repr__(self) -> str:
        return f"SynthDataset(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"
