"""Segmentation metrics on label maps (numpy only): IoU, mIoU, FB-IoU, pixel accuracy, hIoU.

Every metric takes label maps, never models, so it can be checked against hand-computed
answers. Values are fractions in [0, 1]; NaN means "undefined" (e.g. a class that appears
in neither the prediction nor the ground truth), and means skip NaN.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..labels import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "EpisodeMeter", "iou_from_confusion", "mean_iou", "harmonic_mean"]


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    return pred.astype(np.int64, copy=False).ravel(), target.astype(np.int64, copy=False).ravel()


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) from a [K, K] matrix (rows: target, columns: prediction).

    A class with an empty union (absent from both) gets NaN, not 0: it says nothing about the model.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    out = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=out, where=union > 0)
    return out


def mean_iou(ious: np.ndarray, classes: Iterable[int] | None = None) -> float:
    """Mean of ``ious`` over ``classes`` (all if None), skipping NaN; NaN if nothing is left."""
    ious = np.asarray(ious, dtype=np.float64)
    values = ious if classes is None else ious[np.asarray(list(classes), dtype=np.int64)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2 s u / (s + u), the generalized zero-shot headline; 0 when both are 0, NaN if either is."""
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    if seen + unseen == 0:
        return 0.0
    return 2.0 * seen * unseen / (seen + unseen)


class ConfusionMatrix:
    """Pixel counts of (target class, predicted class), accumulated over many images."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one (or a batch of) label map(s); target pixels equal to ``ignore_index`` are skipped."""
        pred, target = _check_pair(pred, target)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        if pred.size and (pred.min() < 0 or pred.max() >= k):
            raise ValueError(f"prediction values must lie in [0, {k})")
        if target.size and (target.min() < 0 or target.max() >= k):
            raise ValueError(f"target values must lie in [0, {k}) or equal ignore_index {self.ignore_index}")
        self.matrix += np.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def iou(self) -> np.ndarray:
        """Per-class IoU [K] (NaN for classes absent from both prediction and target)."""
        return iou_from_confusion(self.matrix)

    def miou(self, classes: Iterable[int] | None = None) -> float:
        return mean_iou(self.iou(), classes)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan


class EpisodeMeter:
    """Binary (class vs rest) episodes, the few-shot segmentation convention (PASCAL-5i, FSS papers).

    Per class, foreground intersection and union are summed over all its episodes before
    dividing (so a class's IoU is not a mean of per-episode IoUs); mIoU averages those over
    classes. FB-IoU sums background and foreground intersections/unions over all episodes of
    the chosen classes and averages the two IoUs.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = int(ignore_index)
        # class id -> [[bg intersection, bg union], [fg intersection, fg union]]
        self.counts: dict[int, np.ndarray] = {}
        self.episodes: dict[int, int] = {}

    def update(self, class_id: int, pred: np.ndarray, target: np.ndarray) -> None:
        """One episode: ``pred`` binary (1 = class), ``target`` binary with ``ignore_index`` allowed."""
        pred, target = _check_pair(pred, target)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if np.any((pred != 0) & (pred != 1)) or np.any((target != 0) & (target != 1)):
            raise ValueError("episode label maps must be binary (0 = rest, 1 = class)")
        counts = self.counts.setdefault(int(class_id), np.zeros((2, 2), dtype=np.int64))
        for value in (0, 1):
            p, t = pred == value, target == value
            counts[value, 0] += int(np.count_nonzero(p & t))
            counts[value, 1] += int(np.count_nonzero(p | t))
        self.episodes[int(class_id)] = self.episodes.get(int(class_id), 0) + 1

    def _selected(self, classes: Iterable[int] | None) -> list[int]:
        if classes is None:
            return sorted(self.counts)
        return [int(c) for c in classes if int(c) in self.counts]

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU of each class that had at least one episode."""
        out = {}
        for c, counts in sorted(self.counts.items()):
            inter, union = counts[1]
            out[c] = float(inter / union) if union else math.nan
        return out

    def miou(self, classes: Iterable[int] | None = None) -> float:
        ious = self.class_iou()
        values = [ious[c] for c in self._selected(classes)]
        return mean_iou(np.array(values, dtype=np.float64)) if values else math.nan

    def fbiou(self, classes: Iterable[int] | None = None) -> float:
        selected = self._selected(classes)
        if not selected:
            return math.nan
        total = sum(self.counts[c] for c in selected)
        ious = [total[v, 0] / total[v, 1] for v in (0, 1) if total[v, 1] > 0]
        return float(np.mean(ious)) if ious else math.nan

    def num_episodes(self, classes: Iterable[int] | None = None) -> int:
        return sum(self.episodes[c] for c in self._selected(classes))


def label_boundaries(label_map: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label (ignored pixels never count)."""
    lm = np.asarray(label_map)
    edge = np.zeros(lm.shape, dtype=bool)
    valid = lm != ignore_index
    dx = (lm[:, 1:] != lm[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    dy = (lm[1:, :] != lm[:-1, :]) & valid[1:, :] & valid[:-1, :]
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    edge[:-1, :] |= dy
    edge[1:, :] |= dy
    return edge


class BoundaryFScore:
    """Boundary F-score: predicted boundary pixels within ``tolerance`` pixels of a true boundary
    (precision) and true boundary pixels within ``tolerance`` of a predicted one (recall),
    accumulated over all images. Pixels labelled ``ignore_index`` in the target are left out."""

    def __init__(self, tolerance: int = 2, ignore_index: int = IGNORE_INDEX):
        self.tolerance = int(tolerance)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.pred_hits = self.pred_total = self.true_hits = self.true_total = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        from scipy.ndimage import binary_dilation  # heavy

        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape or pred.ndim != 2:
            raise ValueError(f"boundary F-score needs two label maps of one shape, got {pred.shape}, {target.shape}")
        ignored = target == self.ignore_index
        pred_b = label_boundaries(np.where(ignored, self.ignore_index, pred), self.ignore_index)
        true_b = label_boundaries(target, self.ignore_index)
        r = self.tolerance
        disk = np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2) <= r * r
        near_true = binary_dilation(true_b, structure=disk) if true_b.any() else true_b
        near_pred = binary_dilation(pred_b, structure=disk) if pred_b.any() else pred_b
        self.pred_hits += int((pred_b & near_true).sum())
        self.pred_total += int(pred_b.sum())
        self.true_hits += int((true_b & near_pred).sum())
        self.true_total += int(true_b.sum())

    def precision(self) -> float:
        return self.pred_hits / self.pred_total if self.pred_total else math.nan

    def recall(self) -> float:
        return self.true_hits / self.true_total if self.true_total else math.nan

    def fscore(self) -> float:
        p, r = self.precision(), self.recall()
        if math.isnan(p) or math.isnan(r) or p + r == 0:
            return math.nan if math.isnan(p) or math.isnan(r) else 0.0
        return 2 * p * r / (p + r)
