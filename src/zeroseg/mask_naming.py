"""Mask naming: a semantic model's second opinion on each detection's name (ZSI + LSeg).

The instance model (ZSI) finds objects well but often names unseen ones wrongly; the semantic
model (LSeg) names unseen objects differently, from whole-image context at every pixel. Each
detection ``i`` with score ``s_i``, label ``l_i`` and mask ``m_i`` gets the semantic model's
mean probability of ``l_i`` over ``m_i``,

    q_i = mean_{p in m_i} P_semantic(l_i | p),

computed with the asked labels plus the semantic model's background label, and is rescored

    s'_i = s_i ** (1 - w) * q_i ** w        (a weighted geometric mean; w = 0: the detector alone).

Mask naming runs where the asked labels do not mix the models' training classes with new names:
in the generalized setting the semantic model's own bias towards its training classes would
overrule the detector (``InstanceSegmenter.names_by_mask``).

The weight ``w`` is chosen on the val split with the calibration classes as the asked names
(``zeroseg calibrate-instances``), never with unseen classes. Because ``q_i <= 1``, a
detection needs ``s_i >= t ** (1 / (1 - w))`` to reach a final score ``t``: that is the
detector's candidate threshold when only final scores of ``t`` or more are kept.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mask_label_probabilities", "rescore", "candidate_threshold", "semantic_labels"]


def semantic_labels(labels: list[str], background: str | None) -> list[str]:
    """The labels the semantic model is asked: the detector's, plus its background label if missing."""
    if background and background not in labels:
        return list(labels) + [background]
    return list(labels)


def mask_label_probabilities(probs: np.ndarray, masks: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """``q`` [N]: the mean of ``probs[label_ids[i]]`` over ``masks[i]`` ([C, H, W], bool [N, H, W]);
    0 for an empty mask (no pixel vouches for it)."""
    n = int(label_ids.shape[0])
    q = np.zeros(n, np.float32)
    for i in range(n):
        mask = masks[i]
        count = int(mask.sum())
        if count:
            q[i] = float(probs[int(label_ids[i])][mask].sum()) / count
    return q


def rescore(scores: np.ndarray, q: np.ndarray, weight: float) -> np.ndarray:
    """``scores ** (1 - weight) * q ** weight`` (weight in [0, 1]; 0 gives ``scores`` back)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mask naming weight must be in [0, 1], got {weight}")
    if weight == 0.0:
        return np.asarray(scores, np.float32).copy()
    s = np.clip(np.asarray(scores, np.float64), 0.0, None)
    return (s ** (1.0 - weight) * np.clip(q, 0.0, None) ** weight).astype(np.float32)


def candidate_threshold(threshold: float, weight: float) -> float:
    """The smallest detector score that can still reach a final score of ``threshold``."""
    if weight <= 0.0:
        return float(threshold)
    if weight >= 1.0 or threshold <= 0.0:
        return 0.0
    return float(threshold) ** (1.0 / (1.0 - weight))


def naming_settings(extra: dict[str, Any]) -> tuple[str | None, float]:
    """(semantic model name, weight) a model file records under ``mask_naming`` (off: (None, 0))."""
    record = extra.get("mask_naming") or {}
    weight = float(record.get("weight", 0.0))
    model = record.get("model")
    return (str(model), weight) if model and weight > 0 else (None, 0.0)
