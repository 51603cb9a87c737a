"""Running a ZSI model over a COCO-format ground truth: the ZSI and GZSI protocols.

- ``zsi``: images with at least one unseen instance; the model is asked about the unseen
  names only; unseen mask (or box) mAP@0.5 and Recall@100 at IoU 0.4/0.5/0.6.
- ``gzsi``: all images; the model is asked about seen + unseen names together (optionally
  with seen scores lowered by ``calibration``); seen, unseen and their harmonic mean.

``text_control="shuffle"`` describes every unseen class by another unseen class's name (a
fixed derangement) while the ground truth stays: a model that transfers through language
must collapse. Metrics come from ``zeroseg.eval.coco_metrics`` (pycocotools).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.coco_instances import read_instances
from ..data.datasets.base import read_coco_json
from ..data.datasets.coco_zsi import coco_zsi_split, filter_coco
from ..errors import ZerosegError
from ..io import ensure_writable_dir, load_image, save_image_atomic, write_bytes_atomic
from ..progress import progress as tqdm
from ..viz import instance_overlay
from .calibration import DEFAULT_HUBNESS
from .coco_metrics import category_split, format_instance_summary, zsi_protocol
from .protocols import shuffled_names

MODES = ("zsi", "gzsi")
RESULT_FORMAT = "zeroseg-eval-instances/1"
NUM_EXAMPLES = 4


def _subset(gt: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    return {**gt, "images": [i for i in gt["images"] if int(i["id"]) in image_ids],
            "annotations": [a for a in gt["annotations"] if int(a["image_id"]) in image_ids]}


def select_images(gt: dict[str, Any], mode: str, unseen_ids: list[int], max_images: int | None) -> list[dict]:
    """The protocol's images in ground-truth order (ZSI: those with an unseen instance), at most ``max_images``."""
    if mode == "zsi":
        keep = {int(a["image_id"]) for a in gt["annotations"] if int(a["category_id"]) in set(unseen_ids)}
        images = [i for i in gt["images"] if int(i["id"]) in keep]
    else:
        images = list(gt["images"])
    return images[:max_images] if max_images else images


def evaluate_instances(segmenter: Any, gt: dict[str, Any], image_root: str | Path, seen_ids: list[int],
                       unseen_ids: list[int], mode: str = "zsi", *, calibration: float = 0.0,
                       text_control: str | None = None, max_images: int | None = None, iou_type: str = "segm",
                       out_dir: str | Path | None = None, progress: bool = True, seed: int = 0,
                       distractors: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``segmenter.detect`` on the protocol's images and score the detections.

    ``gt``: a COCO dict whose "file_name"s are relative to ``image_root``; ``seen_ids`` /
    ``unseen_ids``: category ids. ``distractors``: names asked too (as new names) whose
    detections are then dropped: they compete for names and for the 100 detections kept, as the
    test's other classes would (``zeroseg.data.synth.distractor_names``). Returns the
    ``zsi_protocol`` result plus run information.
    """

    if mode not in MODES:
        raise ZerosegError(f"unknown instance protocol {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "gzsi" and not seen_ids:
        raise ZerosegError("GZSI needs seen categories")
    if not unseen_ids:
        raise ZerosegError("the ZSI protocols need unseen categories")
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    asked = list(unseen_ids) if mode == "zsi" else list(seen_ids) + list(unseen_ids)
    name_map = shuffled_names([names[c] for c in unseen_ids], seed) if text_control == "shuffle" else {}
    if text_control not in (None, "shuffle"):
        raise ZerosegError(f"unknown text control {text_control!r}; expected 'shuffle'")
    labels = [name_map.get(names[c], names[c]) for c in asked] + [str(d) for d in distractors]
    seen_labels = [names[c] for c in seen_ids]
    images = select_images(gt, mode, unseen_ids, max_images)
    if not images:
        raise ZerosegError(f"no images for the {mode} protocol in the ground truth")
    root = Path(image_root)
    results: list[dict[str, Any]] = []
    examples: list[tuple[np.ndarray, Any, int]] = []
    seconds = []
    for info in tqdm(images, desc=f"eval-instances {mode}", unit="img", disable=not progress):
        path = root / info["file_name"]
        if not path.is_file():
            raise ZerosegError(f"image not found: {path} (listed in the ground truth)")
        image = load_image(path)
        found = segmenter.detect(image, labels, seen_labels=seen_labels, calibration=calibration,
                                 score_threshold=0.0)
        seconds.append(found.seconds)
        # distractor names get id -1: their detections compete, then are left out of the results
        results += found.to_coco(int(info["id"]), category_ids=asked + [-1] * len(distractors))
        if len(examples) < NUM_EXAMPLES:
            examples.append((image, found, int(info["id"])))
    sub = _subset(gt, {int(i["id"]) for i in images})
    result = zsi_protocol(sub, results, seen_ids, unseen_ids, mode, iou_type)
    result.update({
        "format": RESULT_FORMAT, "iou_type": iou_type, "calibration": calibration, "text_control": text_control,
        "model": getattr(segmenter, "source", ""), "num_images": len(images),
        "seconds_per_image": float(np.median(seconds)) if seconds else None,
    })
    if out_dir is not None:
        write_outputs(result, examples, Path(out_dir), mode)
    return result


def write_outputs(result: dict[str, Any], examples: list, out_dir: Path, mode: str) -> None:
    """``metrics_<mode>.json`` and a few example overlays, each written atomically."""

    out = ensure_writable_dir(out_dir)
    write_bytes_atomic(out / f"metrics_{mode}.json", (json.dumps(result, indent=1) + "\n").encode())
    for image, found, image_id in examples:
        save_image_atomic(instance_overlay(image, found.top(3)), out / f"example_{mode}_{image_id}.png")


def summary_line(result: dict[str, Any]) -> str:
    return format_instance_summary(result)


__all__ = ["MODES", "Renaming", "choose_instance_naming", "evaluate_instances", "select_images", "summary_line"]


CALIBRATION_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
RELAY_TOP_K_GRID = (5, 0)  # 0 here: the whole trained vocabulary
RELAY_SCALE_GRID = (10.0, 20.0, 40.0, 80.0, 160.0)


def category_ids(gt: dict[str, Any], names: Sequence[str]) -> list[int]:
    """The ids of ``names`` among ``gt``'s categories; a missing name is an error."""
    ids = {c["name"]: int(c["id"]) for c in gt["categories"]}
    missing = [n for n in names if n not in ids]
    if missing:
        raise ZerosegError(f"the ground truth has no category {missing[0]!r} (of {len(missing)} missing): "
                           "use the benchmark the model was trained on")
    return [ids[n] for n in names]


def choose_instance_calibration(segmenter: Any, gt: dict[str, Any], image_root: str | Path, trained_ids: list[int],
                                calibration_ids: list[int], values: Sequence[float] = CALIBRATION_GRID,
                                max_images: int | None = None, progress: bool = True,
                                distractors: Sequence[str] = ()) -> dict[str, Any]:
    """The GZSI calibration C chosen without unseen classes (as ``zeroseg.eval.calibration`` does
    for semantic GZS): on the val split ``gt``, the trained classes play "seen" and the calibration
    classes (seen classes whose images were dropped from training) play "unseen"; the C with the
    best harmonic mean of their mask mAP@0.5 wins (ties: the smaller C)."""
    if not calibration_ids:
        raise ZerosegError("the model has no calibration classes (train with calibration_classes: N)")
    table = []
    for c in values:
        r = evaluate_instances(segmenter, gt, image_root, trained_ids, calibration_ids, "gzsi", calibration=float(c),
                               max_images=max_images, progress=progress, distractors=distractors)
        table.append({"calibration": float(c), "map50_trained": r["seen"]["map50"],
                      "map50_calibration": r["unseen"]["map50"], "hm_map50": r["hm"]["map50"]})
    best = max(table, key=lambda row: (-1.0 if row["hm_map50"] is None else row["hm_map50"], -row["calibration"]))
    return {"calibration": best["calibration"], "hm_map50": best["hm_map50"], "table": table}


def _calibration_row(segmenter: Any, gt: dict[str, Any], image_root: str | Path, trained_ids: list[int],
                     calibration_ids: list[int], max_images: int | None, progress: bool,
                     distractors: Sequence[str], **setting: float) -> dict[str, Any]:
    """One row of a val choice: ``setting`` and the ZSI protocol's calibration-class mask mAP@0.5
    and Recall@100 (IoU 0.5) with the calibration classes as the asked, never-trained names."""
    r = evaluate_instances(segmenter, gt, image_root, trained_ids, calibration_ids, "zsi", max_images=max_images,
                           progress=progress, distractors=distractors)
    return {**setting, "map50_calibration": r["map50"], "recall100_calibration": r["recall100"]["0.5"]}


def choose_instance_relay(segmenter: Any, gt: dict[str, Any], image_root: str | Path, trained_ids: list[int],
                          calibration_ids: list[int], top_k_grid: Sequence[int] = RELAY_TOP_K_GRID,
                          scale_grid: Sequence[float] = RELAY_SCALE_GRID, max_images: int | None = None,
                          progress: bool = True, distractors: Sequence[str] = ()) -> dict[str, Any]:
    """Whether (and how) to name boxes through the trained classes (``zeroseg.relay.BoxRelay``),
    chosen without unseen classes: the ZSI protocol on the val split ``gt`` with the calibration
    classes as the asked, never-trained names; the best calibration-class mask mAP@0.5 wins, the
    relay off on ties. ``top_k`` 0 in the grid means the whole vocabulary. The segmenter's
    relay settings are left as they were."""
    if not calibration_ids:
        raise ZerosegError("the model has no calibration classes (train with calibration_classes: N)")
    before = (segmenter.relay_top_k, segmenter.relay_scale)
    vocabulary = len(segmenter.seen)
    settings = [(0, before[1])] + [(k or vocabulary, float(s)) for k in top_k_grid for s in scale_grid]
    table = []
    try:
        for top_k, scale in settings:
            segmenter.relay_top_k, segmenter.relay_scale = top_k, scale
            table.append(_calibration_row(segmenter, gt, image_root, trained_ids, calibration_ids, max_images,
                                          progress, distractors, top_k=top_k, scale=scale))
    finally:
        segmenter.relay_top_k, segmenter.relay_scale = before
    best = max(table, key=lambda row: (row["map50_calibration"] or 0.0, row["top_k"] == 0))
    return {"top_k": best["top_k"], "scale": best["scale"], "map50_calibration": best["map50_calibration"],
            "num_images": len(select_images(gt, "zsi", calibration_ids, max_images)), "table": table}


def choose_instance_relay_hubness(segmenter: Any, gt: dict[str, Any], image_root: str | Path, trained_ids: list[int],
                                  calibration_ids: list[int], hubness: Sequence[float] = DEFAULT_HUBNESS,
                                  max_images: int | None = None, progress: bool = True,
                                  distractors: Sequence[str] = ()) -> dict[str, Any]:
    """The box relay's hubness correction (``zeroseg.relay.relay_similarity``), chosen like
    ``choose_instance_relay`` with the segmenter's own relay top-k and scale (the relay must be
    on): the best calibration-class mask mAP@0.5 on val wins, ties go to the smaller correction.
    The segmenter's ``relay_hubness`` is left as it was."""
    if not calibration_ids:
        raise ZerosegError("the model has no calibration classes (train with calibration_classes: N)")
    if segmenter.relay_top_k <= 0:
        raise ZerosegError("the hubness correction is part of the relay: switch the relay on first")
    before, table = segmenter.relay_hubness, []
    try:
        for h in hubness:
            segmenter.relay_hubness = float(h)
            table.append(_calibration_row(segmenter, gt, image_root, trained_ids, calibration_ids, max_images,
                                          progress and not table, distractors, hubness=float(h)))
    finally:
        segmenter.relay_hubness = before
    best = max(table, key=lambda row: (row["map50_calibration"] or 0.0, -row["hubness"]))
    return {"hubness": best["hubness"], "map50_calibration": best["map50_calibration"],
            "top_k": segmenter.relay_top_k, "scale": segmenter.relay_scale,
            "num_images": len(select_images(gt, "zsi", calibration_ids, max_images)), "table": table}


def instance_ground_truth(data: str | Path | None = None, split: str = "test", coco_split: str | None = None,
                          data_root: str | Path | None = None,
                          coco_annotations: str = "annotations/instances_val2014.json",
                          coco_images: str = "val2014") -> tuple[dict, Path, list[int], list[int]]:
    """(ground truth COCO dict, image folder, seen category ids, unseen category ids) of a ZSI
    evaluation: the synthetic benchmark ``data``'s ``split``, or COCO's ``coco_split`` ("48_17" /
    "65_15") under ``data_root`` (images without a category of the split are dropped)."""
    if data:
        gt = read_instances(data, split)
        seen, unseen = category_split(gt)
        return gt, Path(data), seen, unseen

    if not data_root:
        raise ZerosegError("--coco-split needs --data-root DIR (DIR/annotations/instances_val2014.json, DIR/val2014/)")
    if coco_split is None:
        raise ZerosegError("give the synthetic benchmark (data) or a COCO split (coco_split)")
    root = Path(data_root)
    ann = root / coco_annotations
    if not ann.is_file():
        raise ZerosegError(f"COCO annotations not found: {ann} (expected DIR/{coco_annotations} "
                           f"and DIR/{coco_images}/*.jpg)")
    gt = read_coco_json(ann, ZerosegError)
    chosen = coco_zsi_split(coco_split)
    gt = filter_coco(gt, chosen["seen"] + chosen["unseen"], drop_images_without=True)
    return gt, root / coco_images, category_ids(gt, chosen["seen"]), category_ids(gt, chosen["unseen"])


NAMING_WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class Renaming:
    """Stands in for an InstanceSegmenter with a namer: each image is detected once (the namer's
    ``q`` recorded) and every later call rescores those detections at ``weight``, so a weight
    grid costs one detection pass (at score threshold 0 the candidates do not depend on it).
    The segmenter's ``naming_weight`` is held at 0 while it is used (``with Renaming(...)``)."""

    def __init__(self, segmenter: Any, weight: float = 0.0):
        self.segmenter, self.weight, self.source = segmenter, float(weight), getattr(segmenter, "source", "")
        self._found: dict[tuple, Any] = {}

    def __enter__(self) -> "Renaming":
        self._before, self.segmenter.naming_weight = self.segmenter.naming_weight, 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.segmenter.naming_weight = self._before

    def detect(self, image: np.ndarray, labels: list[str], **options: Any) -> Any:
        if options.get("score_threshold", 0.0) != 0.0:
            raise ZerosegError("the naming grid runs at score threshold 0")
        key = (hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest(), tuple(labels),
               float(options.get("calibration") or 0.0))
        if key not in self._found:
            self._found[key] = self.segmenter.detect(image, labels, **options)
        return self._found[key].renamed(self.weight)


def choose_instance_naming(segmenter: Any, gt: dict[str, Any], image_root: str | Path, trained_ids: list[int],
                           calibration_ids: list[int], weights: Sequence[float] = NAMING_WEIGHT_GRID,
                           max_images: int | None = None, progress: bool = True,
                           distractors: Sequence[str] = ()) -> dict[str, Any]:
    """The mask-naming weight (``zeroseg.mask_naming``) chosen without unseen classes: the ZSI
    protocol on the val split ``gt`` with the calibration classes as the asked names; the best
    calibration-class mask mAP@0.5 wins (ties: the smaller weight). ``segmenter`` needs a namer;
    its weight is left as it was."""
    if not calibration_ids:
        raise ZerosegError("the model has no calibration classes (train with calibration_classes: N)")
    if getattr(segmenter, "namer", None) is None:
        raise ZerosegError("mask naming needs a semantic model (the namer)")
    table = []
    with Renaming(segmenter) as renaming:
        for w in weights:
            renaming.weight = float(w)
            table.append(_calibration_row(renaming, gt, image_root, trained_ids, calibration_ids, max_images,
                                          progress and not table, distractors, weight=float(w)))
    best = max(table, key=lambda row: (row["map50_calibration"] or 0.0, -row["weight"]))
    return {"weight": best["weight"], "map50_calibration": best["map50_calibration"],
            "num_images": len(select_images(gt, "zsi", calibration_ids, max_images)), "table": table}
