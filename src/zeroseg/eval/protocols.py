"""Zero-shot evaluation protocols on a zeroseg-synth dataset (see docs/CONTRACTS.md).

- ``fixed``: test images holding an unseen class; labels = "other" + unseen names; seen-class
  pixels are ignored (they have no name in the label set); headline = mIoU over unseen classes.
- ``gzs``: all test images; labels = "other" + seen + unseen; mIoU seen / unseen and their hIoU.
- ``episode``: LSeg's PASCAL-5i protocol; one binary episode ["other", class] per class present
  in an image; mIoU (few-shot convention) and FB-IoU, for unseen (headline) and seen classes.

``text_control="shuffle"`` hands the model a fixed derangement of the unseen names while the
ground truth stays put: if language carries the transfer, unseen scores must collapse.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import IGNORE_INDEX, OTHER, SynthDataset
from ..errors import ZerosegError
from ..io import ensure_writable_dir, write_bytes_atomic
from ..progress import progress as tqdm
from .metrics import BoundaryFScore, ConfusionMatrix, EpisodeMeter, harmonic_mean
from .plots import QualitativeSample, bar_chart_iou, qualitative_grid

PROTOCOLS = ("fixed", "gzs", "episode")
TEXT_CONTROLS = ("shuffle",)
NUM_EXAMPLES = 4  # rows in the qualitative figure
RESULT_FORMAT = "zeroseg-eval/1"

__all__ = ["PROTOCOLS", "TEXT_CONTROLS", "LabelSet", "shuffled_names",
           "protocol_label_set", "episode_classes", "evaluate", "format_summary"]


# -- label sets (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSet:
    """What the model is asked: ``names[i]`` is shown to it; its answer ``i`` means class ``class_ids[i]``."""

    names: tuple[str, ...]
    class_ids: tuple[int, ...]


def shuffled_names(unseen: Sequence[str], seed: int = 0) -> dict[str, str]:
    """A seeded random derangement of the unseen names: class name -> name shown to the model.

    No name maps to itself, so every unseen class is described by another unseen class's name.
    """
    names = list(unseen)
    if len(names) < 2:
        raise ZerosegError("the shuffle text control needs at least 2 unseen classes")
    rng = np.random.default_rng(seed)
    while True:  # rejection sampling: uniform over derangements, ~e tries on average
        perm = rng.permutation(len(names))
        if not np.any(perm == np.arange(len(names))):
            return {names[i]: names[int(p)] for i, p in enumerate(perm)}


def protocol_label_set(protocol: str, classes: Sequence[str], seen: Sequence[str], unseen: Sequence[str], *,
                       episode_class: str | None = None, name_map: Mapping[str, str] | None = None) -> LabelSet:
    """The label set a protocol asks the model about; ``name_map`` replaces names (text controls)."""
    name_map = name_map or {}
    if protocol == "fixed":
        members = list(unseen)
    elif protocol == "gzs":
        members = list(seen) + list(unseen)
    elif protocol == "episode":
        if episode_class is None or episode_class == OTHER or episode_class not in classes:
            raise ValueError(f"episode protocol needs a class other than {OTHER!r}, got {episode_class!r}")
        members = [episode_class]
    else:
        raise ZerosegError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    names = (OTHER, *(name_map.get(n, n) for n in members))
    ids = (0, *(list(classes).index(n) for n in members))
    return LabelSet(names, ids)


def episode_classes(mask: np.ndarray, num_classes: int) -> list[int]:
    """Class ids (not "other", not ignore) present in a ground-truth mask: one episode each."""
    present = np.unique(mask)
    return [int(c) for c in present if 0 < c < num_classes]


# -- evaluation -----------------------------------------------------------------------------
def _pct(x: float) -> float | None:
    """A fraction as a rounded percentage; NaN -> None (JSON has no NaN)."""
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def _label_set_truth(mask: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Ground truth in label-set positions (-1 where a class is not in the set): for the oracle only."""
    lookup = np.full(max(int(mask.max()), max(labels.class_ids)) + 1, -1, dtype=np.int64)
    lookup[list(labels.class_ids)] = np.arange(len(labels.class_ids))
    return lookup[np.where(mask == IGNORE_INDEX, 0, mask)]


def _predict(segmenter: Any, image: np.ndarray, labels: LabelSet, short_side: int | None,
             refine: str | None = None, refine_options: dict | None = None,
             oracle_truth: np.ndarray | None = None, offsets: list[float] | None = None) -> np.ndarray:
    options: dict[str, Any] = {"short_side": short_side}
    if offsets is not None:  # only then: plain segmenters need not know the keyword
        options["logit_offsets"] = offsets
    if refine:  # only then: plain segmenters need not know the refinement keywords
        options["refine"] = refine
        options["refine_options"] = dict(refine_options or {})
        if oracle_truth is not None:
            options["refine_options"]["ground_truth"] = oracle_truth
    seg = segmenter.segment(image, list(labels.names), **options)
    label_map = np.asarray(seg.label_map)
    if label_map.shape != image.shape[:2]:
        raise ZerosegError(f"segmenter returned a {label_map.shape} label map for a {image.shape[:2]} image")
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(labels.names)):
        raise ZerosegError("segmenter returned label indices outside the label set")
    return label_map.astype(np.int64)


def _select(data: SynthDataset, protocol: str, max_images: int | None) -> list[int]:
    """Indices of the images a protocol evaluates (in index order, at most ``max_images``)."""
    if protocol == "fixed":
        unseen = {data.class_id(n) for n in data.unseen}
        chosen = []
        for i in range(len(data)):
            if max_images is not None and len(chosen) >= max_images:
                break
            # the masks, not the entries' "classes" lists, decide: they are the ground truth
            if unseen & set(episode_classes(data.load_mask(i), len(data.classes))):
                chosen.append(i)
        return chosen
    indices = list(range(len(data)))
    return indices if max_images is None else indices[:max_images]


def evaluate(segmenter: Any, data_dir: str | Path, protocol: str, out_dir: str | Path | None = None,
             text_control: str | None = None, split: str = "test", max_images: int | None = None,
             seed: int = 0, short_side: int | None = None, progress: bool = True, refine: str | None = None,
             refine_options: dict | None = None, oracle: bool = False,
             label_offsets: Mapping[str, float] | None = None) -> dict:
    """Run ``protocol`` on ``data_dir``'s ``split`` and return the results (also written to ``out_dir``).

    ``segmenter`` needs ``.segment(image, labels, short_side=...)`` returning an object with a
    ``.label_map`` of indices into ``labels``; ``short_side`` is passed through (for a zeroseg
    ``Segmenter``, None means the model's own input size and 0 keeps the image size). Scores
    are percentages. ``refine`` (e.g. "spectral") is passed to ``segment``; ``oracle=True``
    additionally hands the refinement the ground truth (SAZS's published selection rule), a
    labelled upper bound that a user can never reach. ``label_offsets`` (class name -> number
    added to its logits; see ``zeroseg.eval.calibration``) calibrates generalized zero-shot
    predictions; names the label set lacks are ignored. With ``out_dir``, writes
    ``metrics.json``, ``per_class_iou.png`` and ``qualitative.png``.
    """

    if protocol not in PROTOCOLS:
        raise ZerosegError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if text_control not in (None, *TEXT_CONTROLS):
        raise ZerosegError(f"unknown text control {text_control!r}; choose one of {', '.join(TEXT_CONTROLS)}")
    if oracle and not refine:
        raise ZerosegError("--oracle needs a refinement (e.g. --refine spectral) to select segments for")
    if max_images is not None and max_images < 1:
        raise ZerosegError("max_images must be at least 1")
    data = SynthDataset(data_dir, split)
    if protocol in ("fixed", "episode") and not data.unseen:
        raise ZerosegError(f"dataset {data.root} has no unseen classes to evaluate")
    name_map = shuffled_names(data.unseen, seed) if text_control == "shuffle" else {}
    if out_dir is not None:
        out_dir = ensure_writable_dir(out_dir)

    k = len(data.classes)
    seen_ids = [data.class_id(n) for n in data.seen]
    unseen_ids = [data.class_id(n) for n in data.unseen]
    chosen = _select(data, protocol, max_images)
    if not chosen:
        what = "images with an unseen class" if protocol == "fixed" else "images"
        raise ZerosegError(f"no {what} in split {split!r} of {data.root}")

    confusion = ConfusionMatrix(k, IGNORE_INDEX)
    boundaries = BoundaryFScore(2, IGNORE_INDEX)
    episodes = EpisodeMeter(IGNORE_INDEX)
    fixed_set = protocol_label_set(protocol, data.classes, data.seen, data.unseen, name_map=name_map) \
        if protocol != "episode" else None
    examples: list = []            # (sample, is_unseen) for the qualitative figure
    offsets = None
    if label_offsets and fixed_set is not None:  # keyed by the true class names, not shown names
        offsets = [float(label_offsets.get(data.classes[c], 0.0)) if c else 0.0 for c in fixed_set.class_ids]
    model_seconds = 0.0
    start = time.perf_counter()
    for i in tqdm(chosen, desc=f"eval {protocol}", unit="img", disable=not progress):
        image, mask = data.load(i)
        stem = Path(data.entries[i]["image"]).stem
        t0 = time.perf_counter()
        if fixed_set is not None:
            truth = _label_set_truth(mask, fixed_set) if oracle else None
            answer = _predict(segmenter, image, fixed_set, short_side, refine, refine_options, truth, offsets)
            pred = np.asarray(fixed_set.class_ids)[answer]
            target = mask.copy()
            if protocol == "fixed":  # seen classes have no name in the label set: not scorable
                target[np.isin(target, seen_ids)] = IGNORE_INDEX
            confusion.update(pred, target)
            boundaries.update(pred, target)
            model_seconds += time.perf_counter() - t0
            if out_dir is not None and len(examples) < NUM_EXAMPLES:
                examples.append((_sample(image, target, pred, stem), True))
            continue
        for c in episode_classes(mask, k):
            labels = protocol_label_set("episode", data.classes, data.seen, data.unseen,
                                        episode_class=data.classes[c], name_map=name_map)
            truth = (mask == c).astype(np.int64) if oracle else None  # "other" = everything but c
            fg = _predict(segmenter, image, labels, short_side, refine, refine_options, truth) == 1
            target = (mask == c).astype(np.int64)
            target[mask == IGNORE_INDEX] = IGNORE_INDEX
            episodes.update(c, fg.astype(np.int64), target)
            is_unseen = c in unseen_ids
            if out_dir is not None and sum(u == is_unseen for _, u in examples) < NUM_EXAMPLES:
                shown = f"{stem}: {data.classes[c]}" + (f" (as {labels.names[1]!r})" if labels.names[1] != data.classes[c] else "")
                examples.append((_sample(image, np.where(target == 1, c, np.where(target == 0, 0, IGNORE_INDEX)),
                                         np.where(fg, c, 0), shown), is_unseen))
        model_seconds += time.perf_counter() - t0
    elapsed = time.perf_counter() - start

    if protocol == "episode":
        metrics, per_class, headline = _episode_results(episodes, data, seen_ids, unseen_ids)
    else:
        metrics, per_class, headline = _confusion_results(confusion, data, protocol, seen_ids, unseen_ids)
        metrics["boundary_f"] = _pct(boundaries.fscore())
    result: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "protocol": protocol,
        "split": split,
        "data": str(data.root),
        "model": str(getattr(segmenter, "source", "") or ""),
        "text_control": text_control,
        "seed": seed,
        "short_side": short_side,
        "refine": refine,
        "oracle_upper_bound": oracle,
        "label_offsets": dict(label_offsets) if label_offsets else None,
        "units": "percent",
        "headline": {"name": headline, "value": metrics[headline]},
        "metrics": metrics,
        "per_class_iou": per_class,
        "seen": list(data.seen),
        "unseen": list(data.unseen),
        "num_images": len(chosen),
        "seconds_per_image": round(model_seconds / len(chosen), 6),
        "wall_seconds": round(elapsed, 3),
    }
    if name_map:
        result["name_map"] = dict(name_map)
    if protocol == "episode":
        result["num_episodes"] = {"unseen": episodes.num_episodes(unseen_ids), "seen": episodes.num_episodes(seen_ids)}
    if out_dir is not None:
        _write_outputs(result, data, Path(out_dir), examples)
    return result


def _sample(image: np.ndarray, target: np.ndarray, pred: np.ndarray, title: str):
    return QualitativeSample(image=image, target=target, prediction=pred, title=title)


def _confusion_results(cm: ConfusionMatrix, data: SynthDataset, protocol: str, seen_ids: list[int],
                       unseen_ids: list[int]) -> tuple[dict, dict, str]:
    iou = cm.iou()
    if protocol == "fixed":
        scored = [0, *unseen_ids]  # the label set: "other" and the unseen classes
        metrics = {"miou_unseen": _pct(cm.miou(unseen_ids)), "iou_other": _pct(iou[0]),
                   "pixel_accuracy": _pct(cm.pixel_accuracy())}
        headline = "miou_unseen"
    else:
        scored = list(range(len(data.classes)))
        s, u = cm.miou(seen_ids), cm.miou(unseen_ids)
        # "other" is the catch-all label, not a named class: it is reported apart, not in seen mIoU
        metrics = {"hiou": _pct(harmonic_mean(s, u)), "miou_seen": _pct(s), "miou_unseen": _pct(u),
                   "miou_all": _pct(cm.miou()), "iou_other": _pct(iou[0]),
                   "pixel_accuracy": _pct(cm.pixel_accuracy())}
        headline = "hiou"
    per_class = {data.classes[c]: _pct(iou[c]) for c in scored}
    return metrics, per_class, headline


def _episode_results(meter: EpisodeMeter, data: SynthDataset, seen_ids: list[int],
                     unseen_ids: list[int]) -> tuple[dict, dict, str]:
    metrics = {"miou_unseen": _pct(meter.miou(unseen_ids)), "fbiou_unseen": _pct(meter.fbiou(unseen_ids)),
               "miou_seen": _pct(meter.miou(seen_ids)), "fbiou_seen": _pct(meter.fbiou(seen_ids))}
    ious = meter.class_iou()
    per_class = {data.classes[c]: _pct(ious.get(c, math.nan)) for c in range(1, len(data.classes))}
    return metrics, per_class, "miou_unseen"


def _write_outputs(result: dict, data: SynthDataset, out_dir: Path, examples: list) -> None:
    head = result["headline"]
    value = "n/a" if head["value"] is None else f"{head['value']:.1f}"
    control = f", text control: {result['text_control']}" if result["text_control"] else ""
    model = f" - {Path(result['model']).name}" if result["model"] else ""
    title = f"{result['protocol']} protocol ({result['split']}{control}): {head['name']} = {value}{model}"
    bar_chart_iou(result["per_class_iou"], set(data.seen), out_dir / "per_class_iou.png", title,
                  unseen=set(data.unseen))
    if examples:
        ordered = [s for s, u in examples if u] + [s for s, u in examples if not u]  # unseen first
        qualitative_grid(ordered[:NUM_EXAMPLES], data.classes, out_dir / "qualitative.png", title=title,
                         ignore_index=IGNORE_INDEX)
    write_bytes_atomic(out_dir / "metrics.json", (json.dumps(result, indent=2) + "\n").encode())


def format_summary(result: Mapping[str, Any]) -> str:
    """One line per metric, for the command line."""
    lines = [f"{result['protocol']} on {result['split']} ({result['num_images']} images"
             + (f", text control {result['text_control']}" if result.get("text_control") else "")
             + (f", refine {result['refine']}" if result.get("refine") else "")
             + (", ORACLE UPPER BOUND: segments chosen with the ground truth" if result.get("oracle_upper_bound")
                else "") + ")"]
    for name, value in result["metrics"].items():
        lines.append(f"  {name:<16} {'n/a' if value is None else f'{value:.2f}'}")
    return "\n".join(lines)
