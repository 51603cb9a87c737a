"""What every real-dataset loader shares: the item contract, lazy file reading and clear errors.

A dataset is a list of images with semantic label maps. ``ds[i]`` reads image ``i`` and its label
map from disk (nothing is read before that) and returns ``(image uint8 [H,W,3], label_map int64
[H,W], classes)``: label value ``k`` names ``classes[k]`` and 255 marks pixels to ignore.
Episodic benchmarks (PASCAL-5i, COCO-20i, FSS-1000) also list their ``(image index, class id)``
episodes; in an episode the target is binary (see :func:`episode_target`).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ZerosegError
from ...io import load_image
from ...labels import IGNORE_INDEX as IGNORE  # the datasets API calls it IGNORE

NAME_STYLES = ("lseg", "readable")
# LSeg's zero-shot few-shot code scores each episode against the pair ("others", class name).
_BACKGROUND = {"lseg": "others", "readable": "other"}


@functools.cache
def _load_data(filename: str) -> str:
    return resources.files("zeroseg.data.datasets").joinpath(filename).read_text(encoding="utf-8")


def load_data(filename: str) -> dict[str, Any]:
    """A class-list / split JSON file shipped in this package (a fresh copy, safe to modify)."""
    return json.loads(_load_data(filename))


def background_name(names: str) -> str:
    """The name of label 0 ("not the class") in episodic datasets for a naming style."""
    check_names(names)
    return _BACKGROUND[names]


def check_names(names: str) -> str:
    if names not in NAME_STYLES:
        raise ZerosegError(f"unknown class-name style {names!r}; choose one of {', '.join(NAME_STYLES)}")
    return names


def episode_target(label_map: np.ndarray, class_id: int) -> np.ndarray:
    """The binary target of an episode: 1 where ``label_map == class_id``, 255 where ignored, else 0."""
    target = (label_map == class_id).astype(np.int64)
    target[label_map == IGNORE] = IGNORE
    return target


class SegmentationDataset:
    """Base class of the real-dataset loaders (see the module docstring for the item contract).

    Subclasses set ``name``, ``layout``, ``fold``, ``split``, ``classes``, ``test_classes`` and
    ``_images`` (one entry per image, whatever ``_read`` needs), and implement ``_read`` and,
    when episodic, ``_episodes``.
    """

    name: str = ""
    layout: str = ""
    episodic: bool = True

    fold: int | None
    split: str
    classes: list[str]
    test_classes: list[int]
    _images: list[Any]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Image ``index`` as ``(image uint8 [H,W,3], label_map int64 [H,W], classes)``."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices are integers, got {type(index).__name__}")
        n = len(self._images)
        if not -n <= index < n:
            raise IndexError(f"image index {index} out of range for {self.name} ({n} images)")
        image, label = self._read(int(index) % n)
        if image.shape[:2] != label.shape:
            raise self.error(
                f"image and annotation sizes differ for {self.image_id(int(index) % n)}: "
                f"{image.shape[1]}x{image.shape[0]} vs {label.shape[1]}x{label.shape[0]}"
            )
        return image, label, list(self.classes)

    def image_id(self, index: int) -> str:
        """A short identifier of image ``index`` (its file stem), for reports."""
        return str(self._images[index])

    def episodes(self) -> list[tuple[int, int]]:
        """Every ``(image index, class id)`` pair the few-shot protocol may draw, in a fixed order."""
        if not self.episodic:
            raise ZerosegError(f"{self.name} is not an episodic dataset: evaluate it with a fixed label set")
        if getattr(self, "_episode_cache", None) is None:
            # Derived lists read every annotation once; keep the result on this instance.
            self._episode_cache = list(self._episodes())
        return list(self._episode_cache)

    def episode(self, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Episode ``k`` of :meth:`episodes` as ``(image, binary target, [background name, class name])``."""
        index, class_id = self.episodes()[k]
        image, label, _ = self[index]
        return image, episode_target(label, class_id), [self.classes[0], self.classes[class_id]]

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _episodes(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def error(self, message: str) -> ZerosegError:
        """A ZerosegError that names this dataset and its expected layout."""
        return ZerosegError(f"{self.name}: {message}; expected layout: {self.layout}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} fold={self.fold} split={self.split} images={len(self)}>"


# --------------------------------------------------------------------------- helpers for subclasses


def check_fold(name: str, fold: int | None, nfolds: int = 4) -> int | None:
    """``fold`` as an int in 0..nfolds-1, or None (meaning: all classes)."""
    if fold is None:
        return None
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < nfolds:
        raise ZerosegError(f"{name}: fold must be one of {', '.join(map(str, range(nfolds)))}, got {fold!r}")
    return int(fold)


def normalize_split(name: str, split: str, aliases: dict[str, str]) -> str:
    """Map a user's split name to the dataset's canonical one (e.g. 'test' -> 'val')."""
    key = str(split).lower()
    if key not in aliases:
        raise ZerosegError(f"{name}: unknown split {split!r}; choose one of {', '.join(sorted(aliases))}")
    return aliases[key]


def find_dir(root: Path, candidates: list[str], marker: str) -> Path | None:
    """The first of ``root/<candidate>`` that contains ``marker`` (a file or folder name)."""
    for rel in candidates:
        d = root / rel if rel else root
        if (d / marker).exists():
            return d
    return None


def read_image(path: Path, dataset: SegmentationDataset) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]; errors name the dataset layout."""

    try:
        return load_image(path)
    except ZerosegError as e:
        raise dataset.error(str(e)) from None


def read_index_png(path: Path, dataset: SegmentationDataset) -> np.ndarray:
    """A label PNG whose pixel values are class indices ("P" palette or "L" grey), as int64 [H, W].

    Colour-coded (RGB) label images are refused: their colours are not class indices.
    """
    from PIL import Image, UnidentifiedImageError  # heavy

    if not path.is_file():
        raise dataset.error(f"annotation not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "I", "I;16"):
                raise dataset.error(f"annotation {path} is a {im.mode} image, not a label-index PNG")
            return np.asarray(im).astype(np.int64)
    except UnidentifiedImageError:
        raise dataset.error(f"unreadable annotation {path}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise dataset.error(f"unreadable annotation {path}: {e}") from None


def read_lines(path: Path, dataset: SegmentationDataset) -> list[str]:
    """Non-empty stripped lines of a list file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise dataset.error(f"cannot read list file {path}: {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_coco_json(path: Path, error: Callable[[str], Exception]) -> dict[str, Any]:
    """A COCO instance file as a dict; ``error(message)`` builds the exception for unreadable or non-COCO files."""
    try:
        with open(path, encoding="utf-8") as f:
            gt = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"unreadable annotation file {path}: {e}") from None
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations",
                                                                                 "categories")):
        raise error(f"{path} is not a COCO instance file (needs 'images', 'annotations' and 'categories' lists)")
    return gt
