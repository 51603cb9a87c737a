"""Generalized zero-shot calibration chosen without unseen classes.

A model trained on seen classes scores them too high when unseen ones compete (the seen bias
of GZS). The usual remedy subtracts a constant from the trained classes' logits (calibrated
stacking, Chao et al. 2016); choosing that constant on unseen classes would leak them. Here it
is chosen with *calibration classes*: seen classes held out of training (``calibration_classes``
in the training config, recorded in the model file). On the val split, which holds seen classes
only, the model is asked about "other" + trained classes + calibration classes; the offset that
maximizes the harmonic mean of the trained-class mIoU and the calibration-class mIoU wins.
The rule uses neither unseen classes nor test images.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import IGNORE_INDEX, OTHER, SynthDataset
from ..errors import ZerosegError
from ..progress import progress as tqdm
from .metrics import ConfusionMatrix, harmonic_mean

DEFAULT_OFFSETS = tuple(round(0.5 * i, 2) for i in range(0, 25))  # 0 .. 12 logit units

__all__ = ["DEFAULT_HUBNESS", "DEFAULT_OFFSETS", "choose_background_offset", "choose_relay", "choose_relay_hubness",
           "choose_relay_settings", "choose_seen_offset", "seen_offsets"]


def seen_offsets(trained: Sequence[str], offset: float) -> dict[str, float]:
    """Per-label offsets: ``-offset`` for every trained class except "other"."""
    return {name: -float(offset) for name in trained if name != OTHER}


def _scored_pass(data: SynthDataset, ids: np.ndarray, n: int, count: int, label_maps: Callable[[np.ndarray], list],
                 desc: str, progress: bool, only_images_with: np.ndarray | None = None) -> tuple[list[ConfusionMatrix], int]:
    """One pass over the first ``n`` images of ``data``, scoring ``count`` predictions per image:
    ``label_maps(image)`` gives them as indices into ``ids`` (class ids). Pixels of classes
    outside ``ids`` are ignored; with ``only_images_with``, so are images showing none of those
    class ids. Returns one confusion matrix per prediction and the number of images used."""
    meters = [ConfusionMatrix(len(data.classes), IGNORE_INDEX) for _ in range(count)]
    used = 0
    for i in tqdm(range(n), desc=desc, unit="img", disable=not progress):
        image, mask = data.load(i)
        if only_images_with is not None and not np.isin(mask, only_images_with).any():
            continue
        used += 1
        target = np.where(np.isin(mask, ids) | (mask == IGNORE_INDEX), mask, IGNORE_INDEX)
        for meter, label_map in zip(meters, label_maps(image)):
            meter.update(ids[label_map], target)
    return meters, used


def _offset_sweep(segmenter: Any, data: SynthDataset, labels: list[str], ids: np.ndarray, penalized: np.ndarray,
                  offsets: Sequence[float], n: int, desc: str, progress: bool,
                  only_images_with: np.ndarray | None = None) -> tuple[list[ConfusionMatrix], int]:
    """Ask ``labels`` (class ids ``ids``) once per image and score every offset at once: the
    offset is subtracted from the logits of the labels where ``penalized`` is 1 (``_scored_pass``
    for the rest)."""

    def label_maps(image: np.ndarray) -> list[np.ndarray]:
        # log-probabilities differ from the logits by a per-pixel constant: the same arg-max
        logp = np.log(np.clip(segmenter.segment(image, labels).probs, 1e-30, None))
        return [(logp - off * penalized[:, None, None]).argmax(axis=0) for off in offsets]

    return _scored_pass(data, ids, n, len(offsets), label_maps, desc, progress, only_images_with)


def _best(table: list[dict], key: str) -> dict:
    """The row with the highest ``key``; ties go to the smaller offset."""
    return max(table, key=lambda r: (-1 if r[key] is None else r[key], -r["offset"]))


def _check_calibration(calibration: Sequence[str]) -> list[str]:
    if not calibration:
        raise ZerosegError("the model has no calibration classes (train with calibration_classes: N)")
    return list(calibration)


def choose_seen_offset(segmenter: Any, data_dir: str | Path, trained: Sequence[str], calibration: Sequence[str],
                       offsets: Sequence[float] = DEFAULT_OFFSETS, split: str = "val",
                       max_images: int | None = None, progress: bool = True) -> dict:
    """The offset (subtracted from trained classes' logits) maximizing val hIoU(trained, calibration).

    ``trained``: the labels the model trained on ("other" first, as in the model file's
    ``labels``); ``calibration``: the seen classes it never trained on. Returns
    ``{"offset", "hiou", "table": [{offset, miou_trained, miou_calibration, hiou}]}`` (percent).
    """
    calibration = _check_calibration(calibration)
    data = SynthDataset(data_dir, split)
    if set(calibration) & set(data.unseen):
        raise ZerosegError("calibration classes must be seen classes")
    trained_named = [n for n in trained if n != OTHER]
    labels = [OTHER, *trained_named, *calibration]
    ids = np.array([0, *(data.class_id(n) for n in trained_named), *(data.class_id(n) for n in calibration)])
    trained_ids = list(ids[1:1 + len(trained_named)])
    calib_ids = list(ids[1 + len(trained_named):])
    penalized = np.zeros(len(labels), np.float32)
    penalized[1:1 + len(trained_named)] = 1.0
    n = len(data) if max_images is None else min(len(data), max_images)
    meters, _ = _offset_sweep(segmenter, data, labels, ids, penalized, offsets, n, "calibrate", progress)
    table = []
    for meter, off in zip(meters, offsets):
        s, u = meter.miou(trained_ids), meter.miou(calib_ids)
        table.append({"offset": float(off), "miou_trained": _pct(s), "miou_calibration": _pct(u),
                      "hiou": _pct(harmonic_mean(s, u))})
    best = _best(table, "hiou")
    return {"offset": best["offset"], "hiou": best["hiou"], "split": split, "num_images": n,
            "calibration_classes": calibration, "table": table}


def _pct(x: float) -> float | None:
    return None if math.isnan(x) else round(100.0 * x, 4)


def _fixed_setting(data_dir: str | Path, calibration: Sequence[str], split: str, max_images: int | None,
                   distractors: Sequence[str] = ()) -> tuple[SynthDataset, list[str], np.ndarray, np.ndarray, int]:
    """The fixed setting with calibration classes as stand-ins: (data, labels "other" +
    calibration + distractors, the labels' class ids, the scored (calibration) class ids, images
    to look at). ``distractors`` (``zeroseg.data.synth.distractor_names``: names that are no
    class) are asked too, so that as many new names compete as in the test's fixed protocol; a
    pixel named by one counts as "other" (a miss for its calibration class)."""
    calibration = _check_calibration(calibration)
    data = SynthDataset(data_dir, split)
    scored = np.array([data.class_id(name) for name in calibration])
    ids = np.array([0, *scored, *([0] * len(distractors))])
    labels = [OTHER, *calibration, *(str(d) for d in distractors)]
    return data, labels, ids, scored, len(data) if max_images is None else min(len(data), max_images)


def choose_background_offset(segmenter: Any, data_dir: str | Path, calibration: Sequence[str],
                             offsets: Sequence[float] = DEFAULT_OFFSETS, split: str = "val",
                             max_images: int | None = None, progress: bool = True,
                             distractors: Sequence[str] = ()) -> dict:
    """The offset subtracted from "other"'s logits that maximizes the calibration classes' mIoU
    when the model is asked about "other" + calibration classes only (the fixed zero-shot
    setting, with held-out seen classes standing in for unseen ones; pixels of the classes it
    trained on are ignored, as the fixed protocol ignores seen pixels). Ties: the smaller offset."""
    data, labels, ids, scored, n = _fixed_setting(data_dir, calibration, split, max_images, distractors)
    penalized = np.zeros(len(labels), np.float32)
    penalized[0] = 1.0
    # like the fixed protocol: only images showing a (stand-in) unseen class
    meters, used = _offset_sweep(segmenter, data, labels, ids, penalized, offsets, n, "calibrate other", progress,
                                 only_images_with=scored)
    table = [{"offset": float(off), "miou_calibration": _pct(m.miou(list(scored))), "iou_other": _pct(m.iou()[0])}
             for m, off in zip(meters, offsets)]
    best = _best(table, "miou_calibration")
    return {"offset": best["offset"], "miou_calibration": best["miou_calibration"], "split": split,
            "num_images": used, "calibration_classes": list(calibration), "distractors": list(distractors),
            "table": table}


def _relay_grid(segmenter: Any, data_dir: str | Path, calibration: Sequence[str], settings: Sequence[tuple[int, float]],
                split: str, max_images: int | None, progress: bool,
                distractors: Sequence[str]) -> tuple[list[float | None], int]:
    """Calibration-class mIoU (the fixed setting of ``choose_background_offset``, the segmenter's
    own offsets applied) for each relay setting ``(top_k, hubness)``, all from one network pass
    per image (``Segmenter.relay_label_maps``). Returns the mIoUs in the order of ``settings``
    and the number of images used."""
    data, labels, ids, scored, n = _fixed_setting(data_dir, calibration, split, max_images, distractors)
    if not segmenter.relay_vocabulary:
        raise ZerosegError("the model records no training labels to relay through")
    settings = [(int(k), float(h)) for k, h in settings]
    meters, used = _scored_pass(data, ids, n, len(settings),
                                lambda image: segmenter.relay_label_maps(image, labels, settings),
                                f"relay ({len(settings)} settings)", progress, only_images_with=scored)
    return [_pct(m.miou(list(scored))) for m in meters], used


def _relay_choice(table: list[dict], key: str, used: int, split: str, calibration: Sequence[str],
                  distractors: Sequence[str], **extra) -> dict:
    """The result of a relay choice: the row of ``table`` with the highest calibration-class mIoU
    (ties go to the smaller ``key``, so "off" first), with the setting it was chosen in."""
    best = max(table, key=lambda r: (-1 if r["miou_calibration"] is None else r["miou_calibration"], -r[key]))
    return {key: best[key], "miou_calibration": best["miou_calibration"], **extra, "split": split,
            "num_images": used, "calibration_classes": list(calibration), "distractors": list(distractors),
            "table": table}


def _top_k_values(segmenter: Any, top_ks: Sequence[int]) -> list[int]:
    """``top_ks`` capped at the vocabulary's size, the whole vocabulary added, sorted."""
    vocabulary = len(segmenter.relay_vocabulary)
    return sorted({min(int(k), vocabulary) for k in top_ks} | {vocabulary}) if vocabulary else []


def choose_relay(segmenter: Any, data_dir: str | Path, calibration: Sequence[str],
                 top_ks: Sequence[int] = (0, 5, 10, 20), split: str = "val", max_images: int | None = None,
                 progress: bool = True, distractors: Sequence[str] = ()) -> dict:
    """The seen-class relay's ``top_k`` (``zeroseg.relay``; 0: off, and the whole vocabulary is
    always tried too) that maximizes the calibration classes' mIoU in the same setting as
    ``choose_background_offset`` ("other" + calibration classes, val images showing one, the
    segmenter's own offsets and ``relay_hubness`` applied). Ties go to the smaller ``top_k``, so
    "off" wins a tie. The segmenter is not changed."""
    values = _top_k_values(segmenter, top_ks)
    mious, used = _relay_grid(segmenter, data_dir, calibration, [(k, segmenter.relay_hubness) for k in values],
                              split, max_images, progress, distractors)
    table = [{"top_k": k, "miou_calibration": m} for k, m in zip(values, mious)]
    return _relay_choice(table, "top_k", used, split, calibration, distractors,
                         vocabulary=len(segmenter.relay_vocabulary))


DEFAULT_HUBNESS = (0.0, 0.25, 0.5, 0.75, 1.0)


def choose_relay_hubness(segmenter: Any, data_dir: str | Path, calibration: Sequence[str],
                         hubness: Sequence[float] = DEFAULT_HUBNESS, split: str = "val",
                         max_images: int | None = None, progress: bool = True,
                         distractors: Sequence[str] = ()) -> dict:
    """The relay's hubness correction (``zeroseg.relay.relay_similarity``) that maximizes the
    calibration classes' mIoU, in the setting of ``choose_relay`` with the segmenter's own
    ``relay_top_k`` (which must be on). Ties go to the smaller correction. The segmenter is not
    changed."""
    if segmenter.relay_top_k <= 0:
        raise ZerosegError("the hubness correction is part of the relay: switch the relay on first")
    values = [float(h) for h in hubness]
    mious, used = _relay_grid(segmenter, data_dir, calibration, [(segmenter.relay_top_k, h) for h in values],
                              split, max_images, progress, distractors)
    table = [{"hubness": h, "miou_calibration": m} for h, m in zip(values, mious)]
    return _relay_choice(table, "hubness", used, split, calibration, distractors, top_k=segmenter.relay_top_k)


def choose_relay_settings(segmenter: Any, data_dir: str | Path, calibration: Sequence[str],
                          top_ks: Sequence[int] = (0, 5, 10, 20), hubness: Sequence[float] = DEFAULT_HUBNESS,
                          split: str = "val", max_images: int | None = None, progress: bool = True,
                          distractors: Sequence[str] = ()) -> tuple[dict, dict | None]:
    """``choose_relay`` (without the hubness correction), then, when the relay is on,
    ``choose_relay_hubness`` at the chosen ``top_k``: the same two choices, by the same rules,
    from one pass over the images (every ``(top_k, hubness)`` pair the two could need is scored
    at once). Returns the two results, the second None when the relay is off."""
    values, corrections = _top_k_values(segmenter, top_ks), [float(h) for h in hubness]
    settings = [(k, 0.0) for k in values] + [(k, h) for k in values if k > 0 for h in corrections if h != 0.0]
    mious, used = _relay_grid(segmenter, data_dir, calibration, settings, split, max_images, progress, distractors)
    score = dict(zip(settings, mious))
    table = [{"top_k": k, "miou_calibration": score[(k, 0.0)]} for k in values]
    relay = _relay_choice(table, "top_k", used, split, calibration, distractors,
                          vocabulary=len(segmenter.relay_vocabulary))
    if relay["top_k"] <= 0:
        return relay, None
    table = [{"hubness": h, "miou_calibration": score[(relay["top_k"], h)]} for h in corrections]
    return relay, _relay_choice(table, "hubness", used, split, calibration, distractors, top_k=relay["top_k"])
