"""PASCAL-5i: PASCAL VOC 2012 with SBD-augmented masks, 20 classes in 4 folds of 5.

On disk (HSNet's ``Datasets_HSN`` layout; ``root`` may also be the ``VOC2012`` folder itself or a
``VOCdevkit`` folder holding it)::

    root/VOC2012/JPEGImages/<name>.jpg
    root/VOC2012/SegmentationClassAug/<name>.png     label indices: 0 background, 1..20, 255 ignore
    root/VOC2012/ImageSets/Segmentation/{train,val}.txt   (used when no HSNet list is present)
    root/splits/pascal/{val,trn}/fold<i>.txt         optional HSNet lists, lines "<name>__<class>"

Fold ``i`` holds classes ``5i+1 .. 5i+5`` (VOC order, :data:`VOC_CLASSES`). The test episodes of fold
``i`` are HSNet's ``splits/pascal/val/fold<i>.txt`` when that file is present (exactly the pairs LSeg
and HSNet evaluate); otherwise every pair (val image, fold class present in it with at least
``min_pixels`` pixels), in image order then class order. HSNet's official lists are a filtered
subset of that derived list (e.g. 346 pairs for fold 0), so give the list files to reproduce
published numbers. The training split (``split="train"``) follows HSNet: the ``trn`` lists of the
three other folds, or the derived pairs of the 15 other classes over ``train.txt``.

``ds[i]`` gives the full VOC label map (0..20, 255); ``ds.episode(k)`` the binary target of an
episode (class pixels 1, everything else 0, 255 kept).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (
    IGNORE,
    SegmentationDataset,
    background_name,
    check_fold,
    check_names,
    find_dir,
    load_data,
    normalize_split,
    read_image,
    read_index_png,
    read_lines,
)

NFOLDS = 4
CLASSES_PER_FOLD = 5
_SPLITS = {"val": "val", "test": "val", "train": "train", "trn": "train"}
_HSNET_SPLIT = {"val": "val", "train": "trn"}  # HSNet's folder names for the list files
_IMAGESETS = {"val": "val.txt", "train": "train.txt"}


def voc_classes(names: str = "lseg") -> list[str]:
    """The 20 VOC class names in label order (label k = names[k-1])."""
    doc = load_data("pascal_voc.json")
    return list(doc["lseg_names"] if check_names(names) == "lseg" else doc["readable_names"])


def fold_classes(fold: int) -> list[int]:
    """The class ids (1..20) held out in PASCAL-5i fold ``fold``."""
    return list(range(CLASSES_PER_FOLD * fold + 1, CLASSES_PER_FOLD * fold + CLASSES_PER_FOLD + 1))


class Pascal5i(SegmentationDataset):
    """PASCAL-5i (see the module docstring for layout and episode rules)."""

    name = "pascal5i"
    layout = (
        "ROOT/VOC2012/JPEGImages/<name>.jpg + ROOT/VOC2012/SegmentationClassAug/<name>.png (values 0-20, 255), "
        "with HSNet lists ROOT/splits/pascal/val/fold<i>.txt ('<name>__<class>') "
        "or ROOT/VOC2012/ImageSets/Segmentation/val.txt"
    )

    def __init__(self, root: str | Path, fold: int | None = None, split: str = "val", *, names: str = "lseg",
                 splits_dir: str | Path | None = None, annotation_dir: str = "SegmentationClassAug",
                 min_pixels: int = 1) -> None:
        """Open PASCAL-5i at ``root`` (nothing but list files is read here).

        ``names``: "lseg" (VOC names as LSeg's label file, background "others") or "readable"
        ("dining table", background "other"). ``splits_dir``: folder holding HSNet's
        ``pascal/<split>/fold<i>.txt`` (default ``root/splits``; when given it must hold them).
        ``annotation_dir``: the label folder under VOC2012 (``SegmentationClass`` for plain VOC).
        ``min_pixels``: least pixels of a class for a derived episode.
        """
        self.fold = check_fold(self.name, fold, NFOLDS)
        self.split = normalize_split(self.name, split, _SPLITS)
        self.min_pixels = int(min_pixels)
        self.classes = [background_name(names), *voc_classes(names)]
        if self.fold is None:
            self.test_classes = list(range(1, 21))
        elif self.split == "val":
            self.test_classes = fold_classes(self.fold)
        else:
            self.test_classes = [c for c in range(1, 21) if c not in fold_classes(self.fold)]

        root = Path(root)
        if not root.is_dir():
            raise self.error(f"dataset root not found: {root}")
        voc = find_dir(root, ["", "VOC2012", "VOCdevkit/VOC2012"], "JPEGImages")
        if voc is None:
            raise self.error(f"no JPEGImages folder under {root}")
        self.image_dir = voc / "JPEGImages"
        self.label_dir = voc / annotation_dir
        if not self.label_dir.is_dir():
            raise self.error(f"annotation folder not found: {self.label_dir}")

        lists = self._hsnet_lists(root, splits_dir)
        if lists is not None:
            pairs = [p for path in lists for p in self._parse_list(path)]
            self._images = list(dict.fromkeys(name for name, _ in pairs))
            where = {name: i for i, name in enumerate(self._images)}
            self._episode_cache = [(where[name], c) for name, c in pairs]
            self.episode_source = ", ".join(str(p) for p in lists)
        else:
            imageset = voc / "ImageSets" / "Segmentation" / _IMAGESETS[self.split]
            if not imageset.is_file():
                hsnet = f"{root / 'splits' / 'pascal' / _HSNET_SPLIT[self.split]}/fold<i>.txt"
                raise self.error(f"no image list: neither {hsnet} nor {imageset} exists")
            self._images = read_lines(imageset, self)
            self._episode_cache = None  # derived from the label maps on first use
            self.episode_source = f"derived from {imageset} (classes with >= {self.min_pixels} pixels)"

    def _hsnet_lists(self, root: Path, splits_dir: str | Path | None) -> list[Path] | None:
        """HSNet's list files for this fold and split, or None to derive the episodes."""
        base = Path(splits_dir) if splits_dir is not None else root / "splits"
        folder = base / "pascal" / _HSNET_SPLIT[self.split]
        if self.fold is None:
            folds = list(range(NFOLDS))
        elif self.split == "val":
            folds = [self.fold]
        else:  # HSNet trains fold i on the trn lists of the other folds
            folds = [f for f in range(NFOLDS) if f != self.fold]
        paths = [folder / f"fold{f}.txt" for f in folds]
        missing = [p for p in paths if not p.is_file()]
        if not missing:
            return paths
        if splits_dir is not None:
            raise self.error(f"list file not found: {missing[0]}")
        return None

    def _parse_list(self, path: Path) -> list[tuple[str, int]]:
        pairs = []
        for line in read_lines(path, self):
            name, sep, cls = line.rpartition("__")
            if not sep or not name or not cls.isdigit():
                raise self.error(f"bad line {line!r} in {path} (expected '<image name>__<class id>')")
            c = int(cls)
            if c not in self.test_classes:
                raise self.error(f"class {c} in {path} is not a class of fold {self.fold} ({self.split})")
            pairs.append((name, c))
        return pairs

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self._images[index]
        image = read_image(self.image_dir / f"{name}.jpg", self)
        label = self._label(name)
        return image, label

    def _label(self, name: str) -> np.ndarray:
        label = read_index_png(self.label_dir / f"{name}.png", self)
        bad = (label > 20) & (label != IGNORE)
        if bad.any():
            raise self.error(f"annotation {self.label_dir / (name + '.png')} has value {int(label[bad][0])} "
                             "outside 0-20 and 255")
        return label

    def _episodes(self) -> list[tuple[int, int]]:
        out = []
        for i, name in enumerate(self._images):
            counts = np.bincount(self._label(name).ravel(), minlength=256)
            out.extend((i, c) for c in self.test_classes if counts[c] >= max(1, self.min_pixels))
        return out
