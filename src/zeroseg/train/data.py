"""Training data: the synthetic benchmark's on-disk format (docs/CONTRACTS.md) read directly.

Only *seen* classes may reach training: targets are remapped from global class ids (positions
in ``index.json`` "classes") to positions in the training label set ``["other"] + seen``, and a
pixel of any other class (unseen, or an id outside the class list) raises ``ZerosegError``.

Augmentation is a pure function of ``(seed, epoch, index)`` (see ``sample_rng``) so a resumed
run, another worker count or another number of processes all see the same crops and flips.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.dataset import IGNORE_INDEX, DatasetIndex
from ..errors import ZerosegError
from ..images import image_to_tensor


def seen_label_set(index: DatasetIndex, held_out: Sequence[str] = ()) -> list[str]:
    """The label set every training image is scored against: background first, then seen classes.

    ``held_out``: seen classes kept out of training (calibration classes, see
    ``calibration_classes``); they are not in the label set and their pixels are ignored.
    """
    background = index.classes[0]
    skip = set(held_out)
    return [background] + [c for c in index.seen if c != background and c not in skip]


def calibration_classes(index: DatasetIndex, count: int, seed: int = 0) -> list[str]:
    """``count`` seen classes, drawn by ``seed`` from the sorted seen list, to hold out of training.

    They stand in for unseen classes when choosing the generalized zero-shot calibration on the
    val split, so that choice never needs an unseen class.
    """
    background = index.classes[0]
    pool = sorted(c for c in index.seen if c != background)
    if not 0 <= count < len(pool):
        raise ZerosegError(f"calibration_classes must be in [0, {len(pool) - 1}], got {count}")
    rng = np.random.default_rng(seed)
    return sorted(pool[i] for i in rng.choice(len(pool), size=count, replace=False)) if count else []


def seen_lookup(index: DatasetIndex, held_out: Sequence[str] = ()) -> np.ndarray:
    """uint8-indexable table: global id -> position in ``seen_label_set`` (-1: forbidden)."""
    table = np.full(256, -1, dtype=np.int64)
    for pos, name in enumerate(seen_label_set(index, held_out)):
        table[index.class_id(name)] = pos
    for name in held_out:
        table[index.class_id(name)] = IGNORE_INDEX
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation randomness of one sample: independent of workers, ranks and resumes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


@dataclass
class AugmentConfig:
    crop_size: int = 256
    scale_min: float = 0.5
    scale_max: float = 2.0
    hflip: bool = True
    color_jitter: float = 0.2  # max relative change of brightness, contrast and saturation
    style: float = 0.0  # probability of each style change (channel shuffle, grayscale, blur, outlines)


def channel_tensor(values: Sequence[float]) -> torch.Tensor:
    """Per-channel normalization constants shaped [3,1,1] to broadcast over an image."""
    return torch.tensor(list(values), dtype=torch.float32).view(3, 1, 1)


# Augmentation runs in PIL and numpy, not torch: torch's CPU kernels (interpolation,
# reductions) may round differently with the thread count, and loader workers run with
# one thread while the main process does not; these results are identical everywhere.
def augment_sample(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, a: AugmentConfig,
                   mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, pad (image with ``mean``, the normalization mean in [0,1]; target with ignore),
    crop, flip, jitter and style changes of one training sample."""
    # Draw every random number up front, in a fixed order, whatever options are on.
    scale = rng.uniform(a.scale_min, a.scale_max)
    oy, ox = rng.random(), rng.random()
    flip = rng.random() < 0.5
    jitter = rng.uniform(1 - a.color_jitter, 1 + a.color_jitter, size=3)
    # drawn after the older draws, so runs without style changes see the same crops as before
    style = _draw_style(rng) if a.style > 0 else None
    image, target = _resize_short_side(image, target, max(1, round(a.crop_size * scale)))
    c = a.crop_size
    h, w = target.shape
    if h < c or w < c:  # pad: image with the mean colour (0 after normalization), target with ignore
        padded = np.empty((max(h, c), max(w, c), 3), np.uint8)
        padded[:] = np.round(mean.flatten().numpy() * 255).astype(np.uint8)
        padded[:h, :w] = image
        padded_t = np.full(padded.shape[:2], IGNORE_INDEX, target.dtype)
        padded_t[:h, :w] = target
        image, target = padded, padded_t
        h, w = target.shape
    top, left = int(oy * (h - c + 1)), int(ox * (w - c + 1))
    image, target = image[top:top + c, left:left + c], target[top:top + c, left:left + c]
    if a.hflip and flip:
        image, target = image[:, ::-1], target[:, ::-1]
    if a.color_jitter > 0:
        image = _color_jitter(image, *jitter)
    if style is not None:
        image = apply_style(image, style, a.style)
    return image, target


class SeenSegmentationDataset(Dataset):
    """One split, targets in ``seen_label_set`` positions.

    ``train=True``: random scale (short side = crop_size * s), pad, random crop, flip, jitter.
    ``train=False``: resize so the short side is ``eval_size`` (None: keep), no randomness.
    Items: ``{"image": float [3,H,W] normalized, "target": int64 [H,W], "index": int}``.
    """

    def __init__(self, index: DatasetIndex, split: str, mean: Sequence[float], std: Sequence[float], *,
                 train: bool, augment: AugmentConfig | None = None, eval_size: int | None = None, seed: int = 0,
                 held_out: Sequence[str] = ()):
        self.index = index
        self.split = split
        self.entries = index.entries(split)
        if not self.entries:
            raise ZerosegError(f"dataset {index.root} has an empty '{split}' split")
        self.labels = seen_label_set(index, held_out)
        self.lookup = seen_lookup(index, held_out)
        self.mean, self.std = channel_tensor(mean), channel_tensor(std)
        self.train = train
        self.augment = augment or AugmentConfig()
        self.eval_size = eval_size
        self.seed = int(seed)
        self.epoch = 0
        # Cheap early guard from the index; the per-pixel check in ``load`` is the real one.
        unseen = set(index.unseen)
        for e in self.entries:
            bad = unseen.intersection(e.get("classes", []))
            if bad:
                raise ZerosegError(f"{split} image {e.get('id')} lists unseen class(es) {sorted(bad)}; "
                                   "unseen classes must never reach training or model selection")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 image [H,W,3], int64 target [H,W] in label-set positions); raises on unseen pixels."""
        e = self.entries[i]
        mask_path = self.index.root / e["mask"]
        image, mask = self.index.load(e)
        target = self.lookup[mask]
        if (target < 0).any():
            ids = sorted(int(v) for v in np.unique(mask[target < 0]))
            names = [self.index.classes[v] if v < len(self.index.classes) else f"id {v}" for v in ids]
            raise ZerosegError(f"{self.split} mask {mask_path} contains class(es) outside the seen label set: "
                               f"{', '.join(names)}; unseen classes must never reach training")
        return image, target

    def __getitem__(self, i: int) -> dict:
        image, target = self.load(i)
        if self.train:
            image, target = augment_sample(image, target, sample_rng(self.seed, self.epoch, i), self.augment, self.mean)
        elif self.eval_size:
            image, target = _resize_short_side(image, target, self.eval_size)
        x = image_to_tensor(image)
        return {"image": (x - self.mean) / self.std, "target": torch.from_numpy(target.astype(np.int64)),
                "index": i}


VOCABULARY_ID0 = IGNORE_INDEX + 1  # target value of vocabulary name 0 (``VocabularySceneDataset``)


class VocabularySceneDataset(Dataset):
    """Scenes of an extra training vocabulary (``zeroseg.data.synth.vocabulary_names``), rendered
    on the fly from ``(seed, epoch, index)`` and augmented as the training split is.

    Items are those of ``SeenSegmentationDataset``; a pixel of vocabulary name ``i`` has target
    ``VOCABULARY_ID0 + i`` (above IGNORE_INDEX, so it never collides with a label-set position);
    the engine maps them to a per-batch label set. ``length`` scenes make an epoch.
    """

    def __init__(self, vocabulary: Sequence[tuple[str, ...]], length: int, mean: Sequence[float],
                 std: Sequence[float], augment: AugmentConfig, seed: int = 0, size: int = 256):
        if not vocabulary:
            raise ZerosegError("the extra training vocabulary is empty")
        self.vocabulary = [tuple(v) for v in vocabulary]
        self.length, self.size = int(length), int(size)
        self.mean, self.std = channel_tensor(mean), channel_tensor(std)
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        from ..data.synth import render_vocabulary_scene  # heavy

        # A stream apart from the training split's sample_rng(seed, epoch, i): the 1 tells them apart.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, int(i), 1]))
        image, local, chosen = render_vocabulary_scene(rng, self.vocabulary, self.size)
        image, local = augment_sample(image, local, rng, self.augment, self.mean)  # as the training split
        table = np.full(256, IGNORE_INDEX, np.int64)
        table[0] = 0
        table[1:1 + len(chosen)] = [VOCABULARY_ID0 + c for c in chosen]
        x = image_to_tensor(np.ascontiguousarray(image))
        return {"image": (x - self.mean) / self.std, "target": torch.from_numpy(table[local]), "index": i}


class JoinedDataset(torch.utils.data.ConcatDataset):
    """``ConcatDataset`` that passes ``set_epoch`` on to its parts."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)


def _draw_style(rng: np.random.Generator) -> dict:
    """The random numbers of one sample's style change, always the same count and order."""
    return {"u": rng.random(4), "perm": rng.permutation(3), "blur": float(rng.uniform(0.5, 1.5)),
            "outline": int(rng.integers(0, 2))}


def apply_style(image: np.ndarray, draw: dict, p: float) -> np.ndarray:
    """Break the artwork's style shortcuts: each change applies with probability ``p``.

    Colour (channel permutation, grayscale), softness (Gaussian blur) and pen strokes (a 3x3
    min filter thickens dark outlines, a max filter thins them): a model that must name objects
    under all of these cannot rely on OpenMoji's exact palette or line weight.
    """
    from PIL import Image, ImageFilter  # heavy

    u = draw["u"]
    if u[0] < p:
        image = image[..., draw["perm"]]
    if u[1] < p:
        g = np.float32(0.299) * image[..., 0] + np.float32(0.587) * image[..., 1] + np.float32(0.114) * image[..., 2]
        image = np.repeat(np.round(g).astype(np.uint8)[..., None], 3, axis=2)
    pil = None
    if u[2] < p:
        pil = Image.fromarray(np.ascontiguousarray(image)).filter(ImageFilter.GaussianBlur(draw["blur"]))
    if u[3] < p:
        pil = (pil or Image.fromarray(np.ascontiguousarray(image)))
        pil = pil.filter(ImageFilter.MinFilter(3) if draw["outline"] == 0 else ImageFilter.MaxFilter(3))
    return np.asarray(pil) if pil is not None else np.ascontiguousarray(image)


def _resize_short_side(image: np.ndarray, target: np.ndarray, short: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear image (PIL filters with the scale, i.e. antialiased), nearest target."""
    from PIL import Image  # heavy

    h, w = target.shape
    f = short / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))  # PIL: (width, height)
    if size == (w, h):
        return image, target
    image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BILINEAR))
    target = np.asarray(Image.fromarray(np.ascontiguousarray(target.astype(np.uint8))).resize(size, Image.NEAREST))
    return image, target


def _color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness, contrast, saturation of a uint8 RGB image (padding is jittered too; harmless)."""
    def gray(x: np.ndarray) -> np.ndarray:  # elementwise, no BLAS: the same bits on any machine load
        return np.float32(0.299) * x[..., 0] + np.float32(0.587) * x[..., 1] + np.float32(0.114) * x[..., 2]

    x = image.astype(np.float32) / np.float32(255.0)
    x = np.clip(x * np.float32(brightness), 0, 1)
    m = gray(x).mean(dtype=np.float32)
    x = np.clip((x - m) * np.float32(contrast) + m, 0, 1)
    g = gray(x)[..., None]
    x = np.clip((x - g) * np.float32(saturation) + g, 0, 1)
    return np.round(x * np.float32(255)).astype(np.uint8)


class EpochShardSampler(Sampler[int]):
    """Seeded per-epoch order, cut into whole global batches and dealt out to ranks.

    Global batch ``k`` is ``order[k*G:(k+1)*G]`` (G = global batch size) whatever the number
    of processes: rank ``r`` takes positions ``r, r+W, ...`` of it, so a W-process run sees
    the same samples per step as a 1-process run. ``start`` skips the first ``start`` global
    positions (a resumed epoch). The last incomplete global batch is dropped.
    """

    def __init__(self, n: int, global_batch: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise ZerosegError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        if n < global_batch:
            raise ZerosegError(f"training split has {n} images, fewer than one batch ({global_batch})")
        self.n, self.global_batch, self.world_size, self.rank = n, global_batch, world_size, rank
        self.seed, self.shuffle = int(seed), shuffle
        self.epoch, self.start = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start_step) * self.global_batch

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        end = self.steps_per_epoch * self.global_batch
        return iter(self.order()[self.start + self.rank:end:self.world_size])

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch * self.global_batch - self.start) // self.world_size


def pad_collate(items: list[dict], multiple: int = 1) -> dict:
    """Stack samples of different sizes: images padded with 0 (the mean), targets with ignore."""
    h = max(it["image"].shape[-2] for it in items)
    w = max(it["image"].shape[-1] for it in items)
    h, w = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    images = torch.zeros(len(items), 3, h, w)
    targets = torch.full((len(items), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, it in enumerate(items):
        ih, iw = it["image"].shape[-2:]
        images[k, :, :ih, :iw] = it["image"]
        targets[k, :ih, :iw] = it["target"]
    return {"image": images, "target": targets, "index": torch.tensor([it["index"] for it in items])}
