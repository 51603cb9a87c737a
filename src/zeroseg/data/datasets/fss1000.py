"""FSS-1000: 1000 object classes, 10 images each, with binary masks.

On disk (``root`` may also be a folder holding ``FSS-1000/``, HSNet's name)::

    root/<class name>/<n>.jpg    the image (n = 1..10)
    root/<class name>/<n>.png    its mask: pixels >= 128 are the object

The class split is HSNet's (``data/splits/fss/{trn,val,test}.txt``, shipped here as
``fss1000.json``): 520 training, 240 validation and the 240 official FSS-1000 test classes.
Class ids are global, as in HSNet and LSeg: sorted(trn) are 1..520, sorted(val) 521..760 and
sorted(test) 761..1000 (LSeg's ``label_files/fewshot_fss.txt`` is this same list, 0-based), so
``ds.classes`` always has 1001 entries and ``ds.test_classes`` is the split's range.

Images of a split are its classes in sorted order, each with its ``*.jpg`` files in lexicographic
order (``1.jpg, 10.jpg, 2.jpg, ...``, like HSNet's ``sorted(glob)``). ``ds[i]`` labels the object
with its class id and the rest 0; every image is one episode ``(i, its class)``, the zero-shot
protocol LSeg evaluates (``--nshot 0``). HSNet's 1-shot test instead keeps ``1.jpg`` as the
support image and queries the other nine; that is a protocol choice left to the caller.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (
    SegmentationDataset,
    background_name,
    check_names,
    load_data,
    normalize_split,
    read_image,
)

_SPLITS = {"train": "trn", "trn": "trn", "val": "val", "test": "test"}
_OFFSET = {"trn": 0, "val": 520, "test": 760}
_CANONICAL = {"trn": "train", "val": "val", "test": "test"}


def fss_split_classes(split: str) -> list[str]:
    """The folder names of one split's classes ("trn"/"train", "val" or "test"), sorted."""
    return sorted(load_data("fss1000.json")[normalize_split("fss1000", split, _SPLITS)])


def fss_classes() -> list[str]:
    """All 1000 folder names in global id order (id k names entry k-1)."""
    return [*fss_split_classes("trn"), *fss_split_classes("val"), *fss_split_classes("test")]


class Fss1000(SegmentationDataset):
    """FSS-1000 (see the module docstring for layout, class ids and episodes)."""

    name = "fss1000"
    layout = ("ROOT/FSS-1000/<class>/<n>.jpg + <n>.png (mask, >= 128 = object) for every class of the split "
              "(HSNet's 520/240/240 class split)")

    def __init__(self, root: str | Path, fold: int | None = None, split: str = "val", *,
                 names: str = "lseg") -> None:
        """Open one split of FSS-1000 at ``root``; checks that every class folder of the split exists.

        ``fold`` must be None (or 0, which LSeg's command line passes); ``names``: "lseg" keeps the
        folder names ("hotel_slipper", background "others"), "readable" writes them with spaces
        ("hotel slipper", background "other").
        """
        if fold not in (None, 0):
            raise self.error(f"FSS-1000 has no folds (fold must be None), got {fold!r}")
        self.fold = None
        key = normalize_split(self.name, split, _SPLITS)
        self.split = _CANONICAL[key]
        folders = fss_classes()
        check_names(names)
        shown = folders if names == "lseg" else [f.replace("_", " ") for f in folders]
        self.classes = [background_name(names), *shown]
        split_folders = fss_split_classes(key)
        first = _OFFSET[key] + 1
        self.test_classes = list(range(first, first + len(split_folders)))

        root = Path(root)
        if not root.is_dir():
            raise self.error(f"dataset root not found: {root}")
        if not (root / split_folders[0]).is_dir() and (root / "FSS-1000").is_dir():
            root = root / "FSS-1000"
        self.root = root
        missing = [f for f in split_folders if not (root / f).is_dir()]
        if missing:
            raise self.error(f"{len(missing)} class folder(s) of the {self.split} split missing under {root}, "
                             f"e.g. {missing[0]!r}")
        self._images = []
        self._labels: list[int] = []
        for k, folder in enumerate(split_folders):
            for path in sorted(p.name for p in (root / folder).iterdir() if p.name.split(".")[-1] == "jpg"):
                self._images.append(f"{folder}/{path}")
                self._labels.append(first + k)

    def image_id(self, index: int) -> str:
        return self._images[index].rsplit(".", 1)[0]

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image, UnidentifiedImageError  # heavy

        rel = self._images[index]
        image = read_image(self.root / rel, self)
        mask_path = self.root / (rel.rsplit(".", 1)[0] + ".png")
        if not mask_path.is_file():
            raise self.error(f"mask not found: {mask_path}")
        try:
            with Image.open(mask_path) as im:
                mask = np.asarray(im.convert("L"))
        except UnidentifiedImageError:
            raise self.error(f"unreadable mask {mask_path}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise self.error(f"unreadable mask {mask_path}: {e}") from None
        # Binarize at 128 as HSNet does, so anti-aliased or re-encoded mask edges split the same way.
        return image, np.where(mask >= 128, self._labels[index], 0).astype(np.int64)

    def _episodes(self) -> list[tuple[int, int]]:
        return list(enumerate(self._labels))
