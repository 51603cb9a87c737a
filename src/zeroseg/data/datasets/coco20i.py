"""COCO-20i: COCO 2014 with the 80 instance classes as semantic classes, in 4 folds of 20.

On disk (``root`` may also be a folder holding ``COCO2014/``, HSNet's name)::

    root/train2014/COCO_train2014_<id>.jpg, root/val2014/COCO_val2014_<id>.jpg
    root/annotations/instances_train2014.json, root/annotations/instances_val2014.json
    root/splits/coco/{val,trn}/fold<i>.pkl     optional HSNet lists (interleaved convention only)

Classes: index ``k`` (1..80) is the k-th COCO category in category-id order (person = 1,
toothbrush = 80), as in HSNet/PFENet's COCO-20i masks; 0 is background.

Two fold conventions exist, chosen with ``convention=``:

- ``"interleaved"`` (default): fold ``i`` = classes ``{4k + i + 1 : k = 0..19}``, i.e. 1, 5, 9, ...
  for fold 0. Used by PFENet and HSNet, and by LSeg, whose zero-shot COCO-20i evaluation runs HSNet's
  loader unchanged (``class_ids_val = [fold + 4 * v for v in range(20)]`` in lang-seg's
  ``fewshot_data/data/coco.py``; its ``splits/coco/val/fold0.pkl`` holds exactly classes 0, 4, 8, ...
  in 0-based ids). Results compared with LSeg's table must use this convention.
- ``"contiguous"``: fold ``i`` = classes ``20i+1 .. 20i+20`` (FWB, Nguyen & Todorovic 2019, and the
  methods that follow it).

Semantic maps from instance annotations (``ds[i]``): non-crowd instances are painted in order of
decreasing annotated area (ties by annotation id), so a smaller object lying on a larger one stays
visible; then crowd regions (``iscrowd=1``) become 255 (ignore) wherever no non-crowd instance
painted a class. Episodes: for each image (in image-id order) and each fold class with at least one
non-crowd annotation of positive area in that image, in class order; or, when HSNet's
``fold<i>.pkl`` is present (interleaved convention), exactly the pairs it lists. HSNet's lists were
made from its own PNG masks and are a filtered subset (e.g. 19217 of the val images with a person).
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ZerosegError
from .base import (
    IGNORE,
    SegmentationDataset,
    background_name,
    check_fold,
    check_names,
    load_data,
    normalize_split,
    read_coco_json,
    read_image,
)

NFOLDS = 4
NCLASSES = 80
CONVENTIONS = ("interleaved", "contiguous")
_SPLITS = {"val": "val", "test": "val", "train": "train", "trn": "train"}
_HSNET_SPLIT = {"val": "val", "train": "trn"}


def coco_categories() -> list[dict[str, Any]]:
    """The 80 COCO categories in id order: ``{"id", "name", "lseg_name"}``."""
    return load_data("coco.json")["categories"]


def coco_classes(names: str = "lseg") -> list[str]:
    """The 80 class names, index k-1 naming class k: LSeg's label-file strings or COCO's own names."""
    key = "lseg_name" if check_names(names) == "lseg" else "name"
    return [c[key] for c in coco_categories()]


def fold_classes(fold: int, convention: str = "interleaved") -> list[int]:
    """The class ids (1..80) held out in COCO-20i fold ``fold`` under ``convention``."""
    if convention == "interleaved":
        return [NFOLDS * k + fold + 1 for k in range(NCLASSES // NFOLDS)]
    if convention == "contiguous":
        per = NCLASSES // NFOLDS
        return list(range(per * fold + 1, per * fold + per + 1))
    raise ValueError(f"unknown COCO-20i convention {convention!r}")


class _NoObjects(pickle.Unpickler):
    """Unpickles plain containers only: HSNet's lists are dicts of lists of str, nothing executable."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a list file")


class Coco20i(SegmentationDataset):
    """COCO-20i (see the module docstring for layout, conventions and the painting rule)."""

    name = "coco20i"
    layout = (
        "ROOT/{train2014,val2014}/COCO_<split>2014_<id>.jpg + ROOT/annotations/instances_{train,val}2014.json "
        "(COCO instance format, 80 categories), optional HSNet lists ROOT/splits/coco/val/fold<i>.pkl"
    )

    def __init__(self, root: str | Path, fold: int | None = None, split: str = "val", *,
                 convention: str = "interleaved", names: str = "lseg", splits_dir: str | Path | None = None) -> None:
        """Open COCO-20i at ``root``: reads the instance JSON (images are read lazily).

        ``convention``: "interleaved" (PFENet/HSNet/LSeg) or "contiguous" (FWB). ``names``: "lseg"
        (LSeg's label strings, background "others") or "readable" (COCO names, background "other").
        ``splits_dir``: folder holding HSNet's ``coco/<split>/fold<i>.pkl`` (default ``root/splits``).
        """
        if convention not in CONVENTIONS:
            raise self.error(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
        self.convention = convention
        self.fold = check_fold(self.name, fold, NFOLDS)
        self.split = normalize_split(self.name, split, _SPLITS)
        self.classes = [background_name(names), *coco_classes(names)]
        if self.fold is None:
            self.test_classes = list(range(1, NCLASSES + 1))
        elif self.split == "val":
            self.test_classes = fold_classes(self.fold, convention)
        else:
            held_out = set(fold_classes(self.fold, convention))
            self.test_classes = [c for c in range(1, NCLASSES + 1) if c not in held_out]

        root = Path(root)
        if not root.is_dir():
            raise self.error(f"dataset root not found: {root}")
        if not (root / "annotations").is_dir() and (root / "COCO2014" / "annotations").is_dir():
            root = root / "COCO2014"
        tag = f"{self.split}2014"
        self.image_dir = root / tag
        self.annotation_file = root / "annotations" / f"instances_{tag}.json"
        if not self.image_dir.is_dir():
            raise self.error(f"image folder not found: {self.image_dir}")
        if not self.annotation_file.is_file():
            raise self.error(f"annotation file not found: {self.annotation_file}")
        self._index(read_coco_json(self.annotation_file, self.error))

        self._episode_cache = None
        self.episode_source = "derived from instance annotations"
        pkl = self._hsnet_list(root, splits_dir)
        if pkl is not None:
            self._episode_cache = self._read_pkl(pkl)
            self.episode_source = str(pkl)

    # ------------------------------------------------------------------ annotations

    def _index(self, gt: dict[str, Any]) -> None:
        """Map category ids to class indices and group annotations by image."""
        try:
            cats = sorted(gt["categories"], key=lambda c: c["id"])
            names = [c["name"] for c in cats]
            expected = [c["name"] for c in coco_categories()]
            if names != expected:
                raise self.error(f"{self.annotation_file} does not hold the 80 COCO categories in id order "
                                 f"(found {len(names)} categories)")
            self._class_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
            images = sorted(gt["images"], key=lambda im: im["id"])
            self._images = [im["file_name"] for im in images]
            self._meta = [(int(im["id"]), int(im["height"]), int(im["width"])) for im in images]
            row = {im_id: i for i, (im_id, _, _) in enumerate(self._meta)}
            self._anns: list[list[dict[str, Any]]] = [[] for _ in images]
            for ann in gt["annotations"]:
                if ann["image_id"] not in row or ann["category_id"] not in self._class_of:
                    raise self.error(f"annotation {ann.get('id')} in {self.annotation_file} refers to an "
                                     "unknown image or category")
                self._anns[row[ann["image_id"]]].append(ann)
        except (KeyError, TypeError, ValueError) as e:
            raise self.error(f"malformed COCO instance file {self.annotation_file}: {e!r}") from None
        for anns in self._anns:
            anns.sort(key=lambda a: a.get("id", 0))

    def image_id(self, index: int) -> str:
        return Path(self._images[index]).stem

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.image_dir / self._images[index], self)
        return image, self.semantic_map(index)

    def semantic_map(self, index: int) -> np.ndarray:
        """The int64 [H, W] class map of image ``index`` painted from its instance annotations."""
        try:
            from pycocotools import mask as mask_utils  # heavy
        except ImportError:
            raise ZerosegError("coco20i needs pycocotools to decode COCO masks: pip install pycocotools") from None

        _, h, w = self._meta[index]
        label = np.zeros((h, w), dtype=np.int64)
        anns = self._anns[index]
        things = sorted((a for a in anns if not a.get("iscrowd", 0)), key=lambda a: -float(a.get("area", 0)))
        crowd = np.zeros((h, w), dtype=bool)
        for ann in things + [a for a in anns if a.get("iscrowd", 0)]:
            try:
                seg = ann["segmentation"]
                if isinstance(seg, list):  # polygons
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if seg else None
                elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:
                    rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str)
                               else seg["counts"])
                if rle is None:
                    m = np.zeros((h, w), bool)
                else:
                    with warnings.catch_warnings():
                        # pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; harmless.
                        warnings.filterwarnings("ignore", message=r"__array__ implementation",
                                                category=DeprecationWarning)
                        m = mask_utils.decode(rle).astype(bool)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise self.error(f"unreadable segmentation in annotation {ann.get('id')} of "
                                 f"{self.annotation_file}: {e!r}") from None
            if m.shape != (h, w):
                raise self.error(f"annotation {ann.get('id')} mask is {m.shape[1]}x{m.shape[0]}, "
                                 f"image is {w}x{h}")
            if ann.get("iscrowd", 0):
                crowd |= m
            else:
                label[m] = self._class_of[ann["category_id"]]
        label[crowd & (label == 0)] = IGNORE
        return label

    # ------------------------------------------------------------------ episodes

    def _episodes(self) -> list[tuple[int, int]]:
        wanted = set(self.test_classes)
        out = []
        for i, anns in enumerate(self._anns):
            present = {self._class_of[a["category_id"]] for a in anns
                       if not a.get("iscrowd", 0) and float(a.get("area", 0)) > 0}
            out.extend((i, c) for c in sorted(present & wanted))
        return out

    def _hsnet_list(self, root: Path, splits_dir: str | Path | None) -> Path | None:
        base = Path(splits_dir) if splits_dir is not None else root / "splits"
        if self.fold is None or self.convention != "interleaved":
            if splits_dir is not None:
                raise self.error("HSNet list files apply to one fold of the interleaved convention only")
            return None
        path = base / "coco" / _HSNET_SPLIT[self.split] / f"fold{self.fold}.pkl"
        if path.is_file():
            return path
        if splits_dir is not None:
            raise self.error(f"list file not found: {path}")
        return None

    def _read_pkl(self, path: Path) -> list[tuple[int, int]]:
        """HSNet's ``{0-based class: ['val2014/COCO_val2014_<id>.jpg', ...]}`` as episodes."""
        try:
            with open(path, "rb") as f:
                table = _NoObjects(f).load()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
            raise self.error(f"unreadable list file {path}: {e}") from None
        if not isinstance(table, dict):
            raise self.error(f"list file {path} is not a dict of class -> image list")
        where = {name: i for i, name in enumerate(self._images)}
        wanted = set(self.test_classes)
        out = []
        for key in sorted(table):
            if not table[key]:
                continue
            c = int(key) + 1
            if c not in wanted:
                raise self.error(f"class {c} in {path} is not a class of fold {self.fold} ({self.split})")
            for rel in table[key]:
                name = Path(str(rel)).name
                if name not in where:
                    raise self.error(f"image {rel} listed in {path} is not in {self.annotation_file}")
                out.append((where[name], c))
        return out
