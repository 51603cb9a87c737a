"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes, evaluated with the fixed label set.

On disk (``root`` may also be a folder holding ``ADEChallengeData2016/``)::

    root/images/{training,validation}/ADE_<split>_<n>.jpg
    root/annotations/{training,validation}/ADE_<split>_<n>.png    0 = unlabeled, 1..150 = classes

Label value ``k`` (1..150) names ``classes[k]``, the first name of entry ``k`` of objectInfo150
(``ade20k.json``): with ``names="lseg"`` as LSeg reads its copy of the file (the first word of
multi-word names: "screen" for "screen door", "chest" for "chest of drawers"), with
``names="readable"`` the full first name (as mmsegmentation lists them). Value 0 (unlabeled)
becomes 255 (ignored), as in the benchmark and PyTorch-Encoding's loader that LSeg trains with;
``classes[0]`` is a placeholder ("other") that never occurs in a label map. ``test_classes`` is
1..150; the dataset is not episodic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (
    IGNORE,
    SegmentationDataset,
    check_names,
    load_data,
    normalize_split,
    read_image,
    read_index_png,
)

NCLASSES = 150
_SPLITS = {"val": "validation", "validation": "validation", "test": "validation",
           "train": "training", "training": "training"}
_CANONICAL = {"validation": "val", "training": "train"}


def ade20k_classes(names: str = "lseg") -> list[str]:
    """The 150 class names (first objectInfo150 name, see the module docstring), index k-1 naming value k."""
    return list(load_data("ade20k.json")[f"{check_names(names)}_names"])


class Ade20k(SegmentationDataset):
    """ADE20K SceneParsing (see the module docstring for layout and label values)."""

    name = "ade20k"
    episodic = False
    layout = ("ROOT/ADEChallengeData2016/images/{training,validation}/<id>.jpg + "
              "annotations/{training,validation}/<id>.png (0 = unlabeled, 1-150 = classes)")

    def __init__(self, root: str | Path, fold: int | None = None, split: str = "val", *,
                 names: str = "lseg") -> None:
        """Open one split; checks that every image has an annotation. ``names``: "lseg" or "readable"."""
        if fold is not None:
            raise self.error(f"ADE20K has no folds (fold must be None), got {fold!r}")
        self.fold = None
        folder = normalize_split(self.name, split, _SPLITS)
        self.split = _CANONICAL[folder]
        self.classes = ["other", *ade20k_classes(names)]
        self.test_classes = list(range(1, NCLASSES + 1))

        root = Path(root)
        if not root.is_dir():
            raise self.error(f"dataset root not found: {root}")
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016" / "images").is_dir():
            root = root / "ADEChallengeData2016"
        self.image_dir = root / "images" / folder
        self.label_dir = root / "annotations" / folder
        for d in (self.image_dir, self.label_dir):
            if not d.is_dir():
                raise self.error(f"folder not found: {d}")
        self._images = sorted(p.stem for p in self.image_dir.iterdir() if p.suffix.lower() == ".jpg")
        if not self._images:
            raise self.error(f"no .jpg images in {self.image_dir}")
        labelled = {p.stem for p in self.label_dir.iterdir() if p.suffix.lower() == ".png"}
        missing = [s for s in self._images if s not in labelled]
        if missing:
            raise self.error(f"{len(missing)} image(s) without annotation in {self.label_dir}, e.g. {missing[0]}.png")

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        stem = self._images[index]
        image = read_image(self.image_dir / f"{stem}.jpg", self)
        raw = read_index_png(self.label_dir / f"{stem}.png", self)
        if raw.max(initial=0) > NCLASSES:
            raise self.error(f"annotation {self.label_dir / (stem + '.png')} has value {int(raw.max())} > 150")
        return image, np.where(raw == 0, IGNORE, raw)
