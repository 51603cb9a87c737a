"""Instance annotations (COCO JSON) for a zeroseg dataset, derived from its label maps.

A synthetic scene holds 1-4 *distinct* classes, so every class present in a label map is exactly
one object instance (possibly split in pieces where another object hides it): its mask is
``label_map == class``. Values 0 ("other") and 255 (ignore) are not instances.

On disk, next to the masks (layout in docs/CONTRACTS.md)::

    DIR/<split>/instances.json     COCO format, one file per split

- "images": id = position in the split + 1, "file_name" (the image path relative to DIR),
  "width", "height", "zeroseg_id" (the entry id in index.json);
- "annotations": id, image_id, category_id (= class index in index.json "classes"),
  "segmentation" (compressed RLE, "counts" a str), "area" (pixels), "bbox" [x, y, w, h]
  (COCO convention: w = last column - first column + 1), "iscrowd": 0;
- "categories": every class but "other", "supercategory" "seen" or "unseen";
- "info": {"format": "zeroseg-synth-instances/1", "split", ...}.

``zeroseg data synth`` writes these files itself; ``zeroseg data instances DIR`` adds them to a
dataset made before.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ZerosegError
from ..io import write_bytes_atomic
from ..progress import progress as tqdm
from .dataset import FORMAT as DATASET_FORMAT
from .dataset import IGNORE_INDEX, OTHER, DatasetIndex
from .masks import encode_mask

__all__ = [
    "FORMAT",
    "coco_from_dataset",
    "coco_from_records",
    "image_annotations",
    "instance_counts",
    "instances_from_label_map",
    "read_instances",
    "write_coco",
    "write_instance_annotations",
]

FORMAT = "zeroseg-synth-instances/1"
FILE_NAME = "instances.json"


def _hint(root: Path | str) -> str:
    return f"run `zeroseg data instances {root}`"


# --------------------------------------------------------------------------- per image


def instances_from_label_map(label_map: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class id, bool mask [H, W]) for every class in ``label_map``, ids ascending, 0 and 255 excluded."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ZerosegError(f"a label map must be [H, W], got shape {label_map.shape}")
    if label_map.dtype.kind == "u" and label_map.itemsize <= 2:  # palette masks: bincount beats unique
        values = np.flatnonzero(np.bincount(label_map.ravel()))
    else:
        values = np.unique(label_map)
    ids = [int(v) for v in values if v != 0 and v != IGNORE_INDEX]
    return [(c, label_map == c) for c in ids]


def mask_annotation(category_id: int, mask: np.ndarray) -> dict[str, Any]:
    """A COCO annotation (no "id"/"image_id") of one non-empty bool instance mask."""

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    return {"category_id": int(category_id), "segmentation": encode_mask(mask), "area": int(mask.sum()),
            "bbox": [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1], "iscrowd": 0}


def image_annotations(label_map: np.ndarray) -> list[dict[str, Any]]:
    """One image's COCO annotations without "id" and "image_id" (they depend on the whole split)."""
    return [mask_annotation(cid, mask) for cid, mask in instances_from_label_map(label_map)]


# --------------------------------------------------------------------------- per split


def _categories(classes: Sequence[str], seen: Sequence[str], unseen: Sequence[str]) -> list[dict[str, Any]]:
    seen_set, unseen_set = set(seen), set(unseen)
    cats = []
    for i, name in enumerate(classes):
        if name == OTHER:
            continue
        if name not in seen_set and name not in unseen_set:
            raise ZerosegError(f"class {name!r} is neither seen nor unseen in the dataset's index.json")
        cats.append({"id": i, "name": name, "supercategory": "unseen" if name in unseen_set else "seen"})
    return cats


def coco_from_records(split: str, classes: Sequence[str], seen: Sequence[str], unseen: Sequence[str],
                      records: Iterable[tuple[dict[str, Any], int, int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """A split's COCO dict from (index.json entry, height, width, ``image_annotations``) in split order."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for pos, (entry, height, width, anns) in enumerate(records):
        image_id = pos + 1
        images.append({"id": image_id, "file_name": entry["image"], "width": int(width), "height": int(height),
                       "zeroseg_id": str(entry.get("id", Path(entry["image"]).stem))})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **a})
    return {
        "info": {"format": FORMAT, "split": split, "dataset_format": DATASET_FORMAT,
                 "description": "zeroseg instance annotations: one instance per class present in a label map"},
        "images": images,
        "annotations": annotations,
        "categories": _categories(classes, seen, unseen),
    }


def _coco_for(index: DatasetIndex, split: str, progress: bool) -> dict[str, Any]:
    entries = index.entries(split)

    def records():
        for entry in tqdm(entries, desc=f"instances {split}", unit="img", disable=not progress):
            label = index.load_mask(entry)
            yield entry, label.shape[0], label.shape[1], image_annotations(label)

    return coco_from_records(split, index.classes, index.seen, index.unseen, records())


def coco_from_dataset(root: str | os.PathLike[str], split: str, progress: bool = True) -> dict[str, Any]:
    """The COCO instance annotations of ``split`` of the dataset at ``root``, from its masks."""
    return _coco_for(DatasetIndex.read(root), split, progress)


def write_coco(path: str | os.PathLike[str], coco: dict[str, Any]) -> Path:
    """Write a COCO dict as compact JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(coco, separators=(",", ":")) + "\n").encode())
    return path


def _record_in_index(root: Path, relpaths: dict[str, str]) -> None:
    """Add {split: relative path} to index.json's "instances" (rewritten atomically, only if it changes)."""
    path = root / "index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    merged = {**(index.get("instances") or {}), **relpaths}
    if index.get("instances") == merged:
        return
    out: dict[str, Any] = {}
    for key, value in index.items():
        if key == "splits":  # keep the short key before the long list, as generate() writes it
            out["instances"] = merged
        if key != "instances":
            out[key] = value
    out.setdefault("instances", merged)
    write_bytes_atomic(path, (json.dumps(out, indent=1) + "\n").encode())


def write_instance_annotations(root: str | os.PathLike[str], splits: Sequence[str] | None = None,
                               progress: bool = True) -> dict[str, Path]:
    """Write ``DIR/<split>/instances.json`` for ``splits`` (default: all) and list them in index.json.

    Returns {split: path written}.
    """
    index = DatasetIndex.read(root)
    chosen = list(index.splits) if splits is None else list(splits)
    for split in chosen:
        index.entries(split)  # unknown split -> error before anything is written
    written: dict[str, Path] = {}
    for split in chosen:
        written[split] = write_coco(index.root / split / FILE_NAME, _coco_for(index, split, progress))
    _record_in_index(index.root, {s: f"{s}/{FILE_NAME}" for s in chosen})
    return written


# --------------------------------------------------------------------------- reading


def read_instances(root: str | os.PathLike[str], split: str) -> dict[str, Any]:
    """The COCO dict of ``split``, checked against the dataset's index.json.

    Raises ZerosegError when the file is missing, malformed or out of date with the split.
    """
    index = DatasetIndex.read(root)
    entries = index.entries(split)
    listed = index.meta.get("instances")
    rel = listed.get(split) if isinstance(listed, dict) else None
    path = index.root / (rel if isinstance(rel, str) else f"{split}/{FILE_NAME}")
    hint = _hint(index.root)
    if not path.is_file():
        raise ZerosegError(f"no instance annotations for split {split!r} at {path}: {hint}")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZerosegError(f"malformed instance annotations {path} ({e}); {hint}") from None
    problem = _problem(coco, split)
    if problem:
        raise ZerosegError(f"malformed instance annotations {path}: {problem}; {hint}")
    if [i["file_name"] for i in coco["images"]] != [e["image"] for e in entries]:
        raise ZerosegError(f"instance annotations {path} do not match split {split!r} of index.json "
                           f"(out of date); {hint}")
    return coco


def _problem(coco: Any, split: str) -> str | None:
    """What is wrong with a COCO dict read from disk, or None."""
    if not isinstance(coco, dict):
        return "not a JSON object"
    info = coco.get("info")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return f"format is not {FORMAT}"
    if info.get("split") != split:
        return f"written for split {info.get('split')!r}, not {split!r}"
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list) or not all(isinstance(x, dict) for x in coco[key]):
            return f"{key!r} must be a list of objects"
    if not all({"id", "file_name", "width", "height"} <= set(i) for i in coco["images"]):
        return "images need id, file_name, width and height"
    if not all({"id", "name"} <= set(c) for c in coco["categories"]):
        return "categories need id and name"
    image_ids = {i["id"] for i in coco["images"]}
    cat_ids = {c["id"] for c in coco["categories"]}
    for a in coco["annotations"]:
        seg = a.get("segmentation")
        if not ({"id", "image_id", "category_id", "bbox", "area"} <= set(a) and isinstance(seg, dict)
                and isinstance(seg.get("counts"), str) and isinstance(seg.get("size"), list)):
            return "annotations need id, image_id, category_id, bbox, area and an RLE segmentation"
        if a["image_id"] not in image_ids or a["category_id"] not in cat_ids:
            return f"annotation {a['id']} refers to an unknown image or category"
    return None


def instance_counts(coco: dict[str, Any]) -> dict[str, int]:
    """{"images", "instances", "seen_instances", "unseen_instances", "categories"} of a COCO dict."""
    unseen = {c["id"] for c in coco["categories"] if c.get("supercategory") == "unseen"}
    n_unseen = sum(1 for a in coco["annotations"] if a["category_id"] in unseen)
    return {"images": len(coco["images"]), "instances": len(coco["annotations"]),
            "seen_instances": len(coco["annotations"]) - n_unseen, "unseen_instances": n_unseen,
            "categories": len(coco["categories"])}
