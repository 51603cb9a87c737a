"""Fusing a language-driven prediction with spectral eigen-segments, without ground truth (SAZS).

The SAZS paper picks, per class, between the prediction and an eigen-segment by IoU with the
*ground-truth* mask, which a user never has. zeroseg offers two rules that use only the model:

- ``pool``: every eigen-segment takes the label whose mean probability inside it is highest,
  if that mean reaches ``confidence``; elsewhere the prediction stays.
- ``select``: per predicted class, the candidate segment (a k-means segment or the positive side
  of an eigenvector) with the highest IoU *with the prediction* replaces the class's mask when
  that IoU reaches ``iou_threshold``. The background label ("other") is not a shape: its mask
  is never replaced (replacing it handed every pixel outside the chosen segment to its runner-up
  object label, which cost 6.5 calibration-class mIoU on val; SAZS fuses object classes).

``oracle_select`` is the ground-truth rule, kept only as an upper bound for evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ZerosegError
from .eigen import eigen_segments

FUSION_METHODS = ("select", "pool")


def upsample_segments(segments: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map [h, w] to ``size`` (H, W)."""
    h, w = segments.shape
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return segments[rows][:, cols]


def candidate_masks(segments: np.ndarray, eigenvectors: np.ndarray | None = None) -> list[np.ndarray]:
    """Boolean masks: each segment of ``segments`` and, if given, each eigenvector's positive side."""
    masks = [segments == s for s in np.unique(segments)]
    if eigenvectors is not None:
        masks += [v > 0 for v in eigenvectors]
    return [m for m in masks if m.any()]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def pool_segments(probs: np.ndarray, segments: np.ndarray, confidence: float = 0.5) -> np.ndarray:
    """Label each segment by its mean probabilities where confident; keep the prediction elsewhere."""
    out = probs.argmax(axis=0).astype(np.int32)
    for s in np.unique(segments):
        inside = segments == s
        mean = probs[:, inside].mean(axis=1)
        if mean.max() >= confidence:
            out[inside] = int(mean.argmax())
    return out


def _runner_up(probs: np.ndarray, excluded: int) -> np.ndarray:
    masked = probs.copy()
    masked[excluded] = -1.0
    return masked.argmax(axis=0)


def select_segments(probs: np.ndarray, candidates: list[np.ndarray], iou_threshold: float = 0.5,
                    reference: np.ndarray | None = None, background: int | None = None) -> np.ndarray:
    """Per predicted class, replace its mask by the best-matching candidate segment.

    The match is IoU with the class's predicted mask, or with ``reference`` (a label map in
    label-set indices; only the oracle passes ground truth here). Larger classes go first so
    smaller objects are painted last. Pixels a class gives up take their runner-up label. The
    ``background`` label's own mask is left as predicted (objects may still paint over it).
    """
    pred = probs.argmax(axis=0).astype(np.int32)
    out = pred.copy()
    classes, areas = np.unique(pred, return_counts=True)
    for c in classes[np.argsort(-areas, kind="stable")]:
        if background is not None and c == background:
            continue
        own = pred == c
        target = own if reference is None else reference == c
        if not target.any() or not candidates:
            continue
        scores = [_iou(m, target) for m in candidates]
        best = int(np.argmax(scores))
        keep_prediction = _iou(own, target) if reference is not None else 0.0
        if scores[best] < iou_threshold or scores[best] <= keep_prediction:
            continue
        segment = candidates[best]
        released = own & ~segment
        out[released] = _runner_up(probs, c)[released]
        out[segment] = c
    return out


def oracle_select(probs: np.ndarray, candidates: list[np.ndarray], ground_truth: np.ndarray) -> np.ndarray:
    """The published SAZS rule: a segment replaces a class's mask when it matches the ground truth
    better than the prediction does. An upper bound for evaluation, never for inference."""
    return select_segments(probs, candidates, iou_threshold=0.0, reference=ground_truth)


def spectral_refine(segmenter: Any, image: np.ndarray, probs: np.ndarray, *, short_side: int | None = None,
                    method: str = "select", k: int = 5, n_segments: int | None = None, confidence: float = 0.5,
                    iou_threshold: float = 0.5, lam: float = 0.0, seed: int = 0,
                    features: str | Any = "decoder", background: int | None = None,
                    ground_truth: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Eigen-segments of a feature map, fused with ``probs`` [C, H, W].

    ``background``: the index of the background label in ``probs`` (the select rule keeps its
    mask; ``Segmenter.segment`` passes its background label's index when it is asked).

    ``features``: ``"decoder"`` (the segmenter's own decoder features), ``"imagenet[...]"`` (an
    ImageNet classification convnet that never saw a mask, see ``ImageNetFeatures``; built once
    per segmenter) or any callable image -> [C, h, w] (e.g. a local DINO ViT via ``load_vit``).
    ``ground_truth`` (label-set indices) switches to the oracle and exists for evaluation only.
    """

    if method not in FUSION_METHODS:
        raise ZerosegError(f"unknown fusion method {method!r}; expected one of {', '.join(FUSION_METHODS)}")
    if callable(features):
        feats = features(image)
    elif features == "decoder":
        feats = segmenter.decoder_features(image, short_side)
    else:
        feats = segmenter.spectral_feature_source(features)(image)
    result = eigen_segments(feats, image if lam > 0 else None, k=k, n_segments=n_segments, lam=lam, seed=seed)
    size = probs.shape[1:]
    segments = upsample_segments(result.segments, size)
    if method == "pool" and ground_truth is None:
        label_map = pool_segments(probs, segments, confidence)
    else:  # both selection rules choose among the same candidates
        vectors = np.stack([upsample_segments(v, size) for v in result.eigenvectors])
        candidates = candidate_masks(segments, vectors)
        label_map = (oracle_select(probs, candidates, ground_truth) if ground_truth is not None
                     else select_segments(probs, candidates, iou_threshold, background=background))
    info = {"refine": "spectral-oracle" if ground_truth is not None else f"spectral-{method}",
            "eigen_segments": segments, "spectral_seconds": result.seconds}
    return label_map.astype(np.int32), info
