"""Loaders for the real benchmarks of the LSeg / SAZS / ZSI papers, read from their own on-disk formats.

    from zeroseg.data.datasets import open_dataset, DATASETS
    ds = open_dataset("pascal5i", "/data/Datasets_HSN", fold=0, split="val")
    image, label_map, classes = ds[0]         # uint8 [H,W,3], int64 [H,W] (255 = ignore), names
    for index, class_id in ds.episodes(): ...  # few-shot / zero-shot episodes of the fold

=========  ==============================================  =====================================
name       data                                            folds / splits
=========  ==============================================  =====================================
pascal5i   VOC2012 + SegmentationClassAug (HSNet layout)   folds 0-3 of 5 classes; val, train
coco20i    COCO 2014 images + instances_*.json             folds 0-3 of 20; interleaved or
                                                           contiguous convention; val, train
fss1000    FSS-1000 class folders                          HSNet 520/240/240 classes; train,
                                                           val, test
ade20k     ADEChallengeData2016                            no folds; val (validation), train
=========  ==============================================  =====================================

Every dataset has ``name``, ``fold``, ``split``, ``classes`` (index 0 = background / unlabeled),
``test_classes``, ``layout``, ``len()``, ``ds[i]``, ``episodes()`` (ade20k raises: not episodic)
and ``episode(k)`` (the binary target of episode k). Files are opened only in ``ds[i]``;
``open_dataset`` itself reads only list/annotation index files. COCO zero-shot detection and
instance-segmentation splits are in :mod:`zeroseg.data.datasets.coco_zsi`.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ...errors import ZerosegError
from .ade20k import Ade20k
from .base import IGNORE, SegmentationDataset, episode_target
from .coco20i import Coco20i
from .coco_zsi import coco_zsi_split, filter_coco
from .fss1000 import Fss1000
from .pascal5i import Pascal5i

DATASETS: MappingProxyType[str, type[SegmentationDataset]] = MappingProxyType({
    "pascal5i": Pascal5i,
    "coco20i": Coco20i,
    "fss1000": Fss1000,
    "ade20k": Ade20k,
})

__all__ = [
    "DATASETS",
    "IGNORE",
    "Ade20k",
    "Coco20i",
    "Fss1000",
    "Pascal5i",
    "SegmentationDataset",
    "coco_zsi_split",
    "episode_target",
    "filter_coco",
    "open_dataset",
]


def open_dataset(name: str, root: str | Path, fold: int | None = None, split: str = "val",
                 **options: Any) -> SegmentationDataset:
    """Open dataset ``name`` (a key of DATASETS) stored at ``root``.

    ``options`` go to the dataset class (e.g. ``convention="contiguous"`` for coco20i,
    ``names="readable"`` for readable class names, ``splits_dir=`` for HSNet list files).
    A missing or malformed root raises ZerosegError naming the expected layout.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"pascal5i": "pascal5i", "pascal": "pascal5i", "coco20i": "coco20i", "coco": "coco20i",
               "fss1000": "fss1000", "fss": "fss1000", "ade20k": "ade20k", "ade": "ade20k"}
    if key not in aliases:
        raise ZerosegError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    cls = DATASETS[aliases[key]]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root", "fold", "split")]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ZerosegError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return cls(root, fold=fold, split=split, **options)
