"""The papers' evaluation protocols on the real datasets, with the published numbers beside them.

Two protocols, both driven by a segmenter (``.segment(image, labels, ...)`` returning an object
whose ``.label_map`` indexes ``labels``, e.g. :class:`zeroseg.api.Segmenter`) and a dataset from
:func:`zeroseg.data.datasets.open_dataset`:

- :func:`evaluate_episodes`: LSeg's zero-shot episodes on PASCAL-5i, COCO-20i and FSS-1000. Each
  episode is a (query image, class) pair; the model is asked the two labels ``[background,
  class name]`` (LSeg's zero-shot network uses ``["others", name]``, see
  ``modules/models/lseg_net_zs.py`` in isl-org/lang-seg; the datasets' class 0 carries that
  word) and its answer 1 is the class mask. Scores follow HSNet's ``AverageMeter``, which
  LSeg's ``test_lseg_zs.py`` uses: foreground and background intersections and unions are
  summed per class over all its episodes; a class's IoU is intersection / max(union, 1) (so a
  class without episodes counts as 0, as there); mIoU averages the fold's classes; FB-IoU sums
  over the fold's classes and averages the background and foreground IoUs.
- :func:`evaluate_fixed`: fixed-label-set semantic segmentation (ADE20K): the labels are the
  dataset's class names, multi-scale + flip, sliding window; mIoU over the classes and pixel
  accuracy over labelled pixels.

How LSeg's official test code prepares an episode, and what is mirrored here
(``test_lseg_zs.py`` + HSNet's ``fewshot_data``):

- the query image is resized to 480x480 (``transforms.Resize((480, 480))`` on the PIL image,
  bilinear, aspect ratio NOT kept) and its label map with ``F.interpolate(mode="nearest")`` to
  the same 480x480 grid; predictions and scores live on that grid. ``resize="square"`` does
  exactly this (PIL bilinear for the image, torch nearest for the mask) and runs the model at
  that size (``short_side=0``). ``resize="short-side"`` instead keeps the aspect ratio, lets the
  segmenter resize the short side and scores at the original resolution (a deviation, offered
  because it is zeroseg's own inference path).
- which episodes: see :func:`sample_episodes` (rules ``in-order`` for PASCAL-5i, ``class-uniform``
  for COCO-20i, ``all`` for FSS-1000: HSNet's loaders with zero support images).
- ignored pixels: PASCAL-5i's 255 (object boundaries) are left out of both prediction and
  target, as HSNet does. HSNet applies no ignore label on COCO-20i / FSS-1000; here every
  dataset's 255 is ignored (on COCO-20i the loader marks crowd regions 255): a deviation only
  where a dataset has such pixels.

ADE20K (``test_lseg.py`` with ``LSeg_MultiEvalModule``): scales 0.5-1.75 of a base size of 520
on the LONG side, horizontal flip, 480-pixel sliding windows with stride 320, logits summed.
:func:`evaluate_fixed` mirrors the scales, flip, window and stride with zeroseg's ``Segmenter``
(``long_side=520`` sets each image's short side so that its long side is 520 x scale). Known
deviations: zeroseg averages logits of bilinear ``align_corners=False`` resizes, pads images to
the network stride (not to the window), and places the last window flush with the image border.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import DATASETS, open_dataset
from ..errors import ZerosegError
from ..io import ensure_writable_dir, write_bytes_atomic
from ..labels import IGNORE_INDEX
from ..progress import progress as tqdm
from .metrics import ConfusionMatrix, EpisodeMeter
from .published import format_real_summary, load_published, published_for, published_table_markdown  # noqa: F401

__all__ = ["EPISODIC_DATASETS", "FIXED_DATASETS", "EPISODE_RULES", "DEFAULT_RULES", "sample_episodes",
           "open_real_dataset", "evaluate_episodes", "evaluate_fixed", "combine_folds", "parse_fold",
           "evaluate_dataset", "write_result", "load_published",
           "published_for", "published_table_markdown", "format_real_summary"]

RESULT_FORMAT = "zeroseg-eval-real/1"
EPISODIC_DATASETS = ("pascal5i", "coco20i", "fss1000")
FIXED_DATASETS = ("ade20k",)
NUM_FOLDS = {"pascal5i": 4, "coco20i": 4}
EPISODE_RULES = ("in-order", "class-uniform", "all", "permuted")
# HSNet's loaders, as LSeg's zero-shot test runs them (no support images, np.random seeded with 0).
DEFAULT_RULES = {"pascal5i": "in-order", "coco20i": "class-uniform", "fss1000": "all"}
RESIZE_MODES = ("square", "short-side")
ADE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)




# -- episodes ----------------------------------------------------------------------------------
def sample_episodes(pairs: Sequence[tuple[int, int]], n: int = 1000, seed: int = 0,
                    rule: str = "permuted") -> list[tuple[int, int]]:
    """The episodes to evaluate, drawn from the candidate ``(image index, class id)`` ``pairs``.

    Rules (all deterministic for a given ``seed``):

    - ``"permuted"``: a seeded permutation of ``pairs`` (``numpy.random.default_rng(seed)``), cycled:
      episode ``k`` is ``pairs[perm[k % len(pairs)]]``, ``n`` episodes. With ``n <= len(pairs)``
      no pair repeats; otherwise every pair appears ``n // len`` or ``n // len + 1`` times.
    - ``"in-order"``: episode ``k`` is ``pairs[k % len(pairs)]``, ``n`` episodes: HSNet's PASCAL-5i
      test loader (``idx %= len(img_metadata)`` over the fold's list file, 1000 episodes), which
      draws nothing at random when there are no support images; ``seed`` is unused.
    - ``"class-uniform"``: HSNet's COCO-20i test loader: per episode a class uniformly among the
      pairs' classes (ascending id), then an image uniformly among that class's images (in
      their order in ``pairs``), ``n`` episodes. The draws replay ``np.random.seed(seed)`` +
      ``np.random.choice(..., 1, replace=False)``, which consumes one full permutation per call
      (legacy ``RandomState``); so with HSNet's per-class lists in their order and ``seed=0``
      the episodes are the ones LSeg evaluated.
    - ``"all"``: every pair once, in order (HSNet's FSS-1000 test set with zero shots); ``n`` and
      ``seed`` are unused.
    """
    pairs = [(int(i), int(c)) for i, c in pairs]
    if rule not in EPISODE_RULES:
        raise ZerosegError(f"unknown episode rule {rule!r}; choose one of {', '.join(EPISODE_RULES)}")
    if not pairs:
        raise ZerosegError("no candidate episodes: the dataset lists no (image, class) pairs for this fold")
    if rule == "all":
        return pairs
    if n < 1:
        raise ZerosegError(f"the number of episodes must be at least 1, got {n}")
    if rule == "in-order":
        return [pairs[k % len(pairs)] for k in range(n)]
    if rule == "permuted":
        perm = np.random.default_rng(seed).permutation(len(pairs))
        return [pairs[int(perm[k % len(pairs)])] for k in range(n)]
    by_class: dict[int, list[int]] = {}
    for image, cls in pairs:
        by_class.setdefault(cls, []).append(image)
    classes = sorted(by_class)
    rs = np.random.RandomState(seed)  # legacy generator on purpose: it is what HSNet's draws used
    out = []
    for _ in range(n):
        cls = classes[int(rs.permutation(len(classes))[0])]
        images = by_class[cls]
        out.append((images[int(rs.permutation(len(images))[0])], cls))
    return out


# -- datasets ----------------------------------------------------------------------------------
def _layout(name: str) -> str:
    """The expected folder layout of dataset ``name`` (from its loader), or '' if unknown."""
    entry = DATASETS.get(name) if isinstance(DATASETS, Mapping) else None
    return str(getattr(entry, "layout", "") or "")


def open_real_dataset(name: str, root: str | Path, fold: int | None = None, split: str = "test",
                      convention: str | None = None) -> Any:
    """Open a real dataset; a missing folder is a one-line ZerosegError naming the expected layout.

    ``convention`` (COCO-20i only: ``"interleaved"`` or ``"contiguous"``) chooses the fold split.
    """
    known = EPISODIC_DATASETS + FIXED_DATASETS
    if name not in known:
        raise ZerosegError(f"unknown dataset {name!r}; choose one of {', '.join(known)}")
    if name in NUM_FOLDS and fold is None:
        raise ZerosegError(f"{name} needs --fold (0-{NUM_FOLDS[name] - 1})")
    if convention is not None and name != "coco20i":
        raise ZerosegError("--coco-convention applies to coco20i only")
    root = Path(root)
    if not root.is_dir():
        layout = _layout(name)
        raise ZerosegError(f"{name}: dataset folder not found: {root}"
                           + (f"; expected layout: {layout}" if layout else ""))
    kwargs = {"convention": convention} if convention is not None else {}
    return open_dataset(name, root, fold=fold, split=split, **kwargs)


def _square(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """HSNet's test transform: image -> size x size (PIL bilinear), label map -> same grid (torch nearest)."""
    import torch  # heavy
    import torch.nn.functional as F  # heavy
    from PIL import Image  # heavy

    img = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))
    # float32 holds every label value (<= 255) exactly; nearest indexing is torch's, as in HSNet
    lab = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None, None]
    lab = F.interpolate(lab, size=(size, size), mode="nearest")[0, 0].numpy().astype(np.int64)
    return img, lab


def _answer(segmenter: Any, image: np.ndarray, labels: list[str], options: dict) -> np.ndarray:
    label_map = np.asarray(segmenter.segment(image, labels, **options).label_map)
    if label_map.shape != image.shape[:2]:
        raise ZerosegError(f"segmenter returned a {label_map.shape} label map for a {image.shape[:2]} image")
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(labels)):
        raise ZerosegError("segmenter returned label indices outside the label set")
    return label_map.astype(np.int64)


def _result_head(protocol: str, name: str, fold: int | None, ds: Any, segmenter: Any) -> dict:
    """The fields every result starts with (what was run on what; scores are percentages)."""
    return {"format": RESULT_FORMAT, "protocol": protocol, "dataset": name, "fold": fold,
            "split": getattr(ds, "split", None), "model": str(getattr(segmenter, "source", "") or ""),
            "units": "percent"}


def _pct(x: float | None) -> float | None:
    """A fraction as a rounded percentage; NaN/None -> None (JSON has no NaN)."""
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def _hsnet_scores(meter: EpisodeMeter, classes: Sequence[int]) -> tuple[float, float, dict[int, float]]:
    """mIoU, FB-IoU and per-class IoU by HSNet's ``AverageMeter.compute_iou`` rules."""
    per_class = {}
    total = np.zeros((2, 2), dtype=np.int64)
    for c in classes:
        counts = meter.counts.get(int(c), np.zeros((2, 2), dtype=np.int64))
        per_class[int(c)] = float(counts[1, 0] / max(int(counts[1, 1]), 1))
        total += counts
    miou = float(np.mean(list(per_class.values()))) if per_class else math.nan
    sides = [total[v, 0] / total[v, 1] for v in (0, 1) if total[v, 1] > 0]
    fbiou = float(np.mean(sides)) if len(sides) == 2 else math.nan
    return miou, fbiou, per_class


def evaluate_episodes(segmenter: Any, ds: Any, n_episodes: int = 1000, seed: int = 0, short_side: int | None = 480,
                      progress: bool = True, *, rule: str | None = None, resize: str = "square",
                      background: str | None = None) -> dict:
    """LSeg's zero-shot episode protocol on an episodic dataset (one fold); results as a JSON-able dict.

    ``rule`` (default: the dataset's HSNet rule, see :data:`DEFAULT_RULES`) and ``n_episodes``,
    ``seed`` choose the episodes (:func:`sample_episodes`). ``resize="square"`` resizes image and
    label map to ``short_side`` x ``short_side`` as the official code does (480); ``"short-side"``
    passes ``short_side`` to the segmenter and scores at the original size. ``background`` is the
    word for "not the class" (default: the dataset's class 0, "others" with LSeg's names).
    Scores are percentages; ``published`` lists the published numbers for this dataset and fold.
    """
    if resize not in RESIZE_MODES:
        raise ZerosegError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if resize == "square" and not short_side:
        raise ZerosegError("the square resize needs a size (short_side > 0, 480 in the papers)")
    name = str(getattr(ds, "name", "") or "")
    rule = rule or DEFAULT_RULES.get(name, "permuted")
    episodes = sample_episodes(ds.episodes(), n_episodes, seed, rule)
    test_classes = [int(c) for c in ds.test_classes]
    background = ds.classes[0] if background is None else background
    options = {"short_side": 0 if resize == "square" else short_side}

    meter = EpisodeMeter(IGNORE_INDEX)
    start = time.perf_counter()
    model_seconds = 0.0
    for index, cls in tqdm(episodes, desc=f"{name or 'episodes'} fold {getattr(ds, 'fold', None)}", unit="ep",
                           disable=not progress):
        image, label, _ = ds[index]
        if resize == "square":
            image, label = _square(image, label, int(short_side))
        t0 = time.perf_counter()
        answer = _answer(segmenter, image, [background, ds.classes[cls]], options)
        model_seconds += time.perf_counter() - t0
        target = (label == cls).astype(np.int64)
        target[label == IGNORE_INDEX] = IGNORE_INDEX
        meter.update(cls, (answer == 1).astype(np.int64), target)
    elapsed = time.perf_counter() - start

    miou, fbiou, per_class = _hsnet_scores(meter, test_classes)
    fold = getattr(ds, "fold", None)
    return {
        **_result_head("episodes", name, fold, ds, segmenter),
        "settings": {"episodes": len(episodes), "rule": rule, "seed": seed, "resize": resize,
                     "short_side": short_side, "background": background},
        "headline": {"name": "miou", "value": _pct(miou)},
        "metrics": {"miou": _pct(miou), "fbiou": _pct(fbiou)},
        "per_class_iou": {ds.classes[c]: _pct(v) for c, v in per_class.items()},
        "episodes_per_class": {ds.classes[c]: meter.episodes.get(c, 0) for c in test_classes},
        "num_episodes": len(episodes),
        "seconds_per_episode": round(model_seconds / len(episodes), 6),
        "wall_seconds": round(elapsed, 3),
        "published": published_for(name, fold),
    }


def evaluate_fixed(segmenter: Any, ds: Any, scales: Sequence[float] = ADE_SCALES, flip: bool = True,
                   window: int | None = 480, short_side: int | None = None, long_side: int | None = 520,
                   max_images: int | None = None, progress: bool = True) -> dict:
    """Fixed-label-set semantic segmentation (ADE20K): labels = the names of ``ds.test_classes``.

    Each image is segmented once with every label, at ``scales`` (x flip) in sliding windows of
    ``window`` pixels. The base size is ``long_side`` on the long side (LSeg's 520; the short
    side is set per image) unless ``short_side`` is given. Target pixels of classes outside the
    label set and 255 are ignored. Returns mIoU over the label set's classes and pixel accuracy
    (percent), per-class IoU and the published numbers. A class absent from both prediction and
    ground truth is left out of the mean (the official metric would count it as 0; over the
    whole ADE20K validation set every class occurs, so the two agree there).
    """
    if (short_side is None) == (long_side is None):
        raise ZerosegError("give exactly one of short_side and long_side")
    if max_images is not None and max_images < 1:
        raise ZerosegError("max_images must be at least 1")
    test_classes = [int(c) for c in ds.test_classes]
    if not test_classes:
        raise ZerosegError("the dataset names no classes to evaluate")
    labels = [ds.classes[c] for c in test_classes]
    lookup = np.asarray(test_classes, dtype=np.int64)
    in_set = np.zeros(max(len(ds.classes), IGNORE_INDEX + 1), dtype=bool)
    in_set[test_classes] = True
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n == 0:
        raise ZerosegError("the dataset has no images")
    cm = ConfusionMatrix(len(ds.classes), IGNORE_INDEX)
    name = str(getattr(ds, "name", "") or "")
    start = time.perf_counter()
    model_seconds = 0.0
    for i in tqdm(range(n), desc=f"{name or 'fixed'}", unit="img", disable=not progress):
        image, label, _ = ds[i]
        h, w = image.shape[:2]
        side = short_side if short_side is not None else max(1, round(long_side * min(h, w) / max(h, w)))
        t0 = time.perf_counter()
        answer = _answer(segmenter, image, labels, {"short_side": side, "window": window,
                                                     "scales": tuple(scales), "flip": flip})
        model_seconds += time.perf_counter() - t0
        target = np.where(in_set[np.clip(label, 0, len(in_set) - 1)] & (label >= 0), label, IGNORE_INDEX)
        cm.update(lookup[answer], target)
    elapsed = time.perf_counter() - start
    iou = cm.iou()
    return {
        **_result_head("fixed", name, None, ds, segmenter),
        "settings": {"scales": list(scales), "flip": flip, "window": window, "short_side": short_side,
                     "long_side": long_side, "num_labels": len(labels)},
        "headline": {"name": "miou", "value": _pct(cm.miou(test_classes))},
        "metrics": {"miou": _pct(cm.miou(test_classes)), "pixacc": _pct(cm.pixel_accuracy())},
        "per_class_iou": {ds.classes[c]: _pct(iou[c]) for c in test_classes},
        "num_images": n,
        "seconds_per_image": round(model_seconds / n, 6),
        "wall_seconds": round(elapsed, 3),
        "published": published_for(name, None),
    }


def combine_folds(results: Sequence[Mapping[str, Any]]) -> dict:
    """Several folds' results -> one dict with every fold and the mean of each metric over folds."""
    if not results:
        raise ZerosegError("no fold results to combine")
    names = {r["dataset"] for r in results}
    if len(names) != 1:
        raise ZerosegError(f"cannot combine folds of different datasets: {sorted(names)}")
    name = names.pop()
    means = {}
    for metric in results[0]["metrics"]:
        values = [r["metrics"].get(metric) for r in results]
        means[metric] = None if any(v is None for v in values) else round(float(np.mean(values)), 4)
    return {"format": RESULT_FORMAT, "protocol": results[0]["protocol"], "dataset": name, "fold": "mean",
            "units": "percent", "folds": [dict(r) for r in results], "metrics": means,
            "headline": {"name": "miou", "value": means.get("miou")},
            "published": published_for(name, "mean")}


def parse_fold(text: str | int | None) -> int | str | None:
    """A ``--fold`` value: None, an integer, or "all"."""
    if text is None or isinstance(text, int):
        return text
    if str(text).strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ZerosegError(f"--fold must be a number (0-3) or 'all', got {text!r}") from None


def evaluate_dataset(name: str, root: str | Path, load_segmenter: Callable[[int | None], Any], *,
                     fold: int | str | None = None, split: str = "test", episodes: int = 1000, seed: int = 0,
                     short_side: int | None = None, convention: str | None = None,
                     max_images: int | None = None, progress: bool = True) -> dict:
    """Run dataset ``name``'s protocol: episodes (PASCAL-5i, COCO-20i, FSS-1000) or fixed labels (ADE20K).

    ``load_segmenter(fold)`` gives the segmenter for a fold (LSeg releases one checkpoint per
    fold); it is called after the dataset opened, so a wrong folder fails before a model loads.
    ``fold="all"`` runs folds 0-3 and returns :func:`combine_folds` of them. ``short_side``:
    the square size of the episodes (default 480), or ADE20K's short side instead of the
    520-pixel long side. ``split="test"`` is what LSeg's test scripts ask HSNet's loaders for:
    the val images of PASCAL-5i / COCO-20i, the 240 test classes of FSS-1000 (ADE20K: validation).
    """
    if name in FIXED_DATASETS:
        if fold is not None:
            raise ZerosegError(f"{name} has no folds; leave out --fold")
        ds = open_real_dataset(name, root, None, split)
        return evaluate_fixed(load_segmenter(None), ds, short_side=short_side,
                              long_side=None if short_side else 520, max_images=max_images, progress=progress)
    if name not in EPISODIC_DATASETS:
        raise ZerosegError(f"unknown dataset {name!r}; choose one of {', '.join(EPISODIC_DATASETS + FIXED_DATASETS)}")
    if max_images is not None:
        raise ZerosegError("--max-images applies to fixed-label evaluation; use --episodes for episodic datasets")
    if name not in NUM_FOLDS and fold is not None:
        raise ZerosegError(f"{name} has no folds; leave out --fold")
    folds = list(range(NUM_FOLDS[name])) if fold == "all" else [fold]
    datasets = [open_real_dataset(name, root, f, split, convention) for f in folds]
    results = [evaluate_episodes(load_segmenter(f), ds, episodes, seed, 480 if short_side is None else short_side,
                                 progress) for f, ds in zip(folds, datasets)]
    return results[0] if len(results) == 1 else combine_folds(results)


def write_result(result: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``result`` to ``out_dir/metrics.json`` atomically; returns the path."""
    path = ensure_writable_dir(out_dir) / "metrics.json"
    write_bytes_atomic(path, (json.dumps(result, indent=2) + "\n").encode())
    return path














