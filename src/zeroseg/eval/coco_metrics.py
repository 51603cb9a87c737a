"""Instance segmentation metrics with pycocotools, and the ZSI / GZSI protocols.

ZSI (Zheng et al., CVPR 2021, "Zero-Shot Instance Segmentation") reports, with pycocotools,
mAP at IoU 0.5 and Recall@100 at IoU 0.4, 0.5 and 0.6:

- ZSI: test images containing at least one unseen instance, unseen categories only;
- GZSI: all test images, seen and unseen categories together; seen, unseen and their harmonic mean.

Ground truth is a COCO-format dict (``zeroseg.data.coco_instances.coco_from_dataset`` or
``read_instances``); results are COCO result dicts (``to_coco_results``). Masks are stored as
compressed RLE whose ``counts`` is a ``str``, so everything here is JSON-able. No model code here:
metrics take masks and scores, never models.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..data.masks import as_numpy, decode_mask, encode_mask, encode_masks
from ..errors import ZerosegError

__all__ = [
    "IOU_THRESHOLDS",
    "MAX_DETECTIONS",
    "category_split",
    "decode_mask",
    "encode_mask",
    "evaluate_coco",
    "format_instance_summary",
    "harmonic_mean",
    "to_coco_results",
    "zsi_protocol",
]

IOU_THRESHOLDS = (0.4, 0.5, 0.6)  # ZSI's Recall@100 thresholds; AP is reported at 0.5
MAX_DETECTIONS = 100
_AP_IOU = 0.5
_KEYS = tuple(f"{t:.1f}" for t in IOU_THRESHOLDS)  # "0.4", "0.5", "0.6": JSON keys of recall100


# --------------------------------------------------------------------------- results


def to_coco_results(image_id: int, boxes_xyxy: Any, scores: Any, category_ids: Any,
                    masks: Any = None) -> list[dict[str, Any]]:
    """COCO result dicts for one image's detections.

    ``boxes_xyxy`` [N, 4] as (x1, y1, x2, y2) in pixels, ``scores`` [N], ``category_ids`` [N]
    (category ids of the ground truth, i.e. class indices), ``masks`` bool [N, H, W] or None.
    Each result has image_id, category_id, bbox [x, y, w, h], score and, with masks,
    segmentation (compressed RLE, counts as str). Numpy arrays, lists or torch tensors are accepted.
    """
    boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)  # an empty input becomes [0, 4]
    scores_np = as_numpy(scores).astype(np.float64).reshape(-1)
    cats = as_numpy(category_ids).reshape(-1)
    n = len(boxes)
    if len(scores_np) != n or len(cats) != n:
        raise ZerosegError(f"to_coco_results: {n} boxes, {len(scores_np)} scores and {len(cats)} category ids")
    rles: list[dict[str, Any]] | None = None
    if masks is not None:
        masks_np = as_numpy(masks)
        if masks_np.ndim != 3 or masks_np.shape[0] != n:
            raise ZerosegError(f"to_coco_results: masks must be [{n}, H, W], got shape {tuple(masks_np.shape)}")
        rles = encode_masks(masks_np)
    out = []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        r: dict[str, Any] = {"image_id": int(image_id), "category_id": int(cats[i]),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores_np[i])}
        if rles is not None:
            r["segmentation"] = rles[i]
        out.append(r)
    return out


def _cap_per_image(results: Iterable[dict[str, Any]], max_dets: int) -> list[dict[str, Any]]:
    """The ``max_dets`` highest-scoring results of each image (stable: ties keep input order)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    out: list[dict[str, Any]] = []
    for rs in by_image.values():
        out.extend(sorted(rs, key=lambda r: -float(r["score"]))[:max_dets])
    return out


# --------------------------------------------------------------------------- evaluation


def _check_gt(gt: Any) -> None:
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations",
                                                                                   "categories")):
        raise ZerosegError("ground truth must be a COCO dict with 'images', 'annotations' and 'categories' lists")


def _coco(dataset: dict[str, Any]):
    from pycocotools.coco import COCO  # heavy

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _gt_dataset(gt: dict[str, Any], iou_type: str) -> dict[str, Any]:
    """A copy pycocotools may modify (it rewrites segmentations in place), with defaults filled in."""
    anns = []
    for a in gt["annotations"]:
        a = dict(a)
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = _area(a, iou_type)
        anns.append(a)
    return {"images": [dict(i) for i in gt["images"]], "categories": [dict(c) for c in gt["categories"]],
            "annotations": anns}


def _area(ann: dict[str, Any], iou_type: str) -> float:
    if iou_type == "segm":
        if "segmentation" not in ann:
            raise ZerosegError("segm evaluation needs a 'segmentation' in every result and annotation")
        return float(decode_mask(ann["segmentation"]).sum())
    return float(ann["bbox"][2]) * float(ann["bbox"][3])  # w * h


def _dt_dataset(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> dict[str, Any]:
    """The detections as a COCO dataset over the ground truth's images and categories.

    Built directly rather than with ``COCO.loadRes``, which fails on an empty list.
    """
    from pycocotools import mask as mask_utils  # heavy

    anns = []
    for i, r in enumerate(results, 1):
        if iou_type == "segm":
            if "segmentation" not in r:
                raise ZerosegError("segm evaluation needs a 'segmentation' in every result "
                                   "(pass masks to to_coco_results)")
            seg = r["segmentation"]
            if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                seg = mask_utils.frPyObjects(seg, *seg["size"])
            area = float(mask_utils.area(seg))
            bbox = r.get("bbox")
            if bbox is None:
                bbox = [float(v) for v in mask_utils.toBbox(seg)]
        else:
            if "bbox" not in r:
                raise ZerosegError("bbox evaluation needs a 'bbox' in every result")
            seg, bbox = None, r["bbox"]
            area = float(bbox[2]) * float(bbox[3])
        a = {"id": i, "image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
             "score": float(r["score"]), "bbox": [float(v) for v in bbox], "area": area, "iscrowd": 0}
        if seg is not None:
            a["segmentation"] = seg
        anns.append(a)
    return {"images": [dict(i) for i in gt["images"]], "categories": [dict(c) for c in gt["categories"]],
            "annotations": anns}


def evaluate_coco(gt: dict[str, Any], results: list[dict[str, Any]], category_ids: Iterable[int] | None = None,
                  iou_type: str = "segm") -> dict[str, Any]:
    """mAP@0.5 and Recall@100 at IoU 0.4/0.5/0.6 with pycocotools' COCOeval.

    One COCOeval run with ``iouThrs = [0.4, 0.5, 0.6]``, ``maxDets = [100]`` and the "all" area
    range, over every ground-truth image and the categories ``category_ids`` (default: all of
    the ground truth's). Results of other categories are dropped; each image keeps its 100
    highest-scoring results. Categories without ground truth instances are skipped in the means.

    Returns {"map50": mean AP@0.5, "recall100": {"0.4": r, "0.5": r, "0.6": r},
    "per_category": {name: {"id", "ap50", "recall100", "instances", "detections"}},
    "images", "categories" (those with ground truth), "instances", "detections", "iou_type"}.
    Means are None when no category has ground truth; empty results give 0.
    """
    from pycocotools.cocoeval import COCOeval  # heavy

    _check_gt(gt)
    if iou_type not in ("segm", "bbox"):
        raise ZerosegError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if not isinstance(results, list):
        raise ZerosegError("results must be a list of COCO result dicts")
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    cat_ids = sorted(names) if category_ids is None else sorted({int(c) for c in category_ids})
    unknown = [c for c in cat_ids if c not in names]
    if unknown:
        raise ZerosegError(f"category ids not in the ground truth: {unknown[:5]}")
    image_ids = {int(i["id"]) for i in gt["images"]}
    stray = sorted({int(r["image_id"]) for r in results} - image_ids)
    if stray:
        raise ZerosegError(f"results refer to image ids not in the ground truth: {stray[:5]}")
    wanted = set(cat_ids)
    kept = _cap_per_image((r for r in results if int(r["category_id"]) in wanted), MAX_DETECTIONS)

    n_instances = {c: 0 for c in cat_ids}
    for a in gt["annotations"]:
        c = int(a["category_id"])
        if c in n_instances and not a.get("iscrowd", 0):
            n_instances[c] += 1
    n_dets = {c: 0 for c in cat_ids}
    for r in kept:
        n_dets[int(r["category_id"])] += 1

    recall = np.full((len(IOU_THRESHOLDS), len(cat_ids)), -1.0)
    precision = np.full((len(IOU_THRESHOLDS), 101, len(cat_ids)), -1.0)
    if cat_ids and image_ids:
        coco_gt = _coco(_gt_dataset(gt, iou_type))
        coco_dt = _coco(_dt_dataset(gt, kept, iou_type))
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.imgIds = sorted(image_ids)
            ev.params.catIds = cat_ids
            ev.params.iouThrs = np.array(IOU_THRESHOLDS, dtype=np.float64)
            ev.params.maxDets = [MAX_DETECTIONS]
            ev.params.areaRng = [[0.0, 1e5 ** 2]]
            ev.params.areaRngLbl = ["all"]
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"][:, :, :, 0, 0]  # [T, R, K]: area "all", maxDets 100
        recall = ev.eval["recall"][:, :, 0, 0]  # [T, K]; -1 where a category has no ground truth

    t50 = IOU_THRESHOLDS.index(_AP_IOU)
    per_category: dict[str, dict[str, Any]] = {}
    ap50s: list[float] = []
    recalls: list[list[float]] = [[] for _ in IOU_THRESHOLDS]
    for k, c in enumerate(cat_ids):
        has_gt = n_instances[c] > 0
        ap = float(np.mean(precision[t50, :, k])) if has_gt else None
        rec = {key: (float(recall[t, k]) if has_gt else None) for t, key in enumerate(_KEYS)}
        if has_gt:
            ap50s.append(ap)
            for t, key in enumerate(_KEYS):
                recalls[t].append(rec[key])
        per_category[names[c]] = {"id": c, "ap50": ap, "recall100": rec, "instances": n_instances[c],
                                  "detections": n_dets[c]}
    return {
        "map50": float(np.mean(ap50s)) if ap50s else None,
        "recall100": {key: (float(np.mean(recalls[t])) if recalls[t] else None) for t, key in enumerate(_KEYS)},
        "per_category": per_category,
        "images": len(image_ids),
        "categories": len(ap50s),
        "instances": sum(n_instances.values()),
        "detections": len(kept),
        "iou_type": iou_type,
    }


# --------------------------------------------------------------------------- protocols


def category_split(gt: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(seen ids, unseen ids) from the categories' "supercategory" ("seen" / "unseen")."""
    _check_gt(gt)
    seen = sorted(int(c["id"]) for c in gt["categories"] if c.get("supercategory") == "seen")
    unseen = sorted(int(c["id"]) for c in gt["categories"] if c.get("supercategory") == "unseen")
    return seen, unseen


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """2ab / (a + b); 0 when both are 0, None when either is undefined."""
    if a is None or b is None:
        return None
    return 0.0 if a + b <= 0 else 2.0 * a * b / (a + b)


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {"map50": m["map50"], "recall100": dict(m["recall100"])}


def zsi_protocol(gt: dict[str, Any], results: list[dict[str, Any]], seen_ids: Sequence[int],
                 unseen_ids: Sequence[int], mode: str, iou_type: str = "segm") -> dict[str, Any]:
    """The ZSI paper's two settings; a JSON-able dict.

    ``mode="zsi"``: only images with at least one unseen instance, only unseen categories (the
    ground truth and the results are both restricted). Returns {"mode", "images", "unseen": metrics,
    "map50", "recall100"} (the last two are the unseen ones).

    ``mode="gzsi"``: all images; each image first keeps its 100 highest-scoring results over all
    categories (the detector's budget), then seen and unseen categories are evaluated separately,
    each with all detections of its categories. Returns {"mode", "images", "seen", "unseen",
    "hm": {"map50", "recall100"}} where hm is the harmonic mean of seen and unseen.
    """
    _check_gt(gt)
    seen, unseen = {int(c) for c in seen_ids}, {int(c) for c in unseen_ids}
    if seen & unseen:
        raise ZerosegError(f"seen and unseen category ids overlap: {sorted(seen & unseen)[:5]}")
    if mode == "zsi":
        if not unseen:
            raise ZerosegError("the ZSI protocol needs unseen category ids")
        keep = {int(a["image_id"]) for a in gt["annotations"] if int(a["category_id"]) in unseen}
        sub = {**gt,
               "images": [i for i in gt["images"] if int(i["id"]) in keep],
               "annotations": [a for a in gt["annotations"]
                               if int(a["image_id"]) in keep and int(a["category_id"]) in unseen],
               "categories": [c for c in gt["categories"] if int(c["id"]) in unseen]}
        res = [r for r in results if int(r["image_id"]) in keep and int(r["category_id"]) in unseen]
        m = evaluate_coco(sub, res, sorted(unseen), iou_type)
        return {"mode": "zsi", "images": m["images"], "unseen": m, **_summary(m)}
    if mode == "gzsi":
        if not seen or not unseen:
            raise ZerosegError("the GZSI protocol needs both seen and unseen category ids")
        capped = _cap_per_image(results, MAX_DETECTIONS)
        ms = evaluate_coco(gt, capped, sorted(seen), iou_type)
        mu = evaluate_coco(gt, capped, sorted(unseen), iou_type)
        hm = {"map50": harmonic_mean(ms["map50"], mu["map50"]),
              "recall100": {k: harmonic_mean(ms["recall100"][k], mu["recall100"][k]) for k in _KEYS}}
        return {"mode": "gzsi", "images": ms["images"], "seen": ms, "unseen": mu, "hm": hm}
    raise ZerosegError(f"unknown instance protocol {mode!r}; expected 'zsi' or 'gzsi'")


# --------------------------------------------------------------------------- reporting


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def format_instance_summary(result: dict[str, Any]) -> str:
    """A short table (percent) of an ``evaluate_coco`` or ``zsi_protocol`` result."""
    if "mode" in result:
        rows = [("unseen", result["unseen"])] if result["mode"] == "zsi" else \
            [("seen", result["seen"]), ("unseen", result["unseen"]), ("HM", result["hm"])]
        title = ("ZSI: images with unseen instances, unseen categories" if result["mode"] == "zsi"
                 else "GZSI: all images, seen + unseen categories")
        title += f" ({result['images']} images)"
    else:
        rows = [("all", result)]
        title = f"instances: {result['images']} images, {result['categories']} categories"
    header = f"{'':8s}{'mAP@0.5':>9s}" + "".join(f"{'R@100 ' + k:>12s}" for k in _KEYS)
    lines = [title, header]
    for name, m in rows:
        lines.append(f"{name:8s}{_pct(m['map50']):>9s}" + "".join(f"{_pct(m['recall100'][k]):>12s}" for k in _KEYS))
    return "\n".join(lines)
