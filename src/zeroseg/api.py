"""The public API: ``load_model(source) -> Segmenter``; ``Segmenter.segment(image, labels)``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ZerosegError
from .images import image_to_tensor
from .inference import InferenceBase
from .models import loading, registry
from .models.lseg import LSegConfig, LSegNet, upsample_logits
from .relay import relay_logits, relay_similarity, relay_weights
from .text import create_text_encoder
from .text.base import CachedTextEncoder, TextEncoder

__all__ = ["Segmentation", "Segmenter", "load_model", "load_onnx_model", "fold_model_loader", "MAX_WORK_PIXELS",
           "MAX_WINDOWS", "MULTISCALE"]


@dataclass
class Segmentation:
    """One image's result: ``label_map`` [H, W] indexes ``labels``; ``probs`` [C, H, W]."""

    label_map: np.ndarray
    probs: np.ndarray
    labels: list[str]
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def fractions(self) -> dict[str, float]:
        """Share of pixels assigned to each label."""
        counts = np.bincount(self.label_map.ravel(), minlength=len(self.labels))
        return {label: float(c) / self.label_map.size for label, c in zip(self.labels, counts)}


# Largest network input (pixels after resizing, at the largest scale): a 4000x1 image scaled to
# a short side of 160 would be 640000x160; such work is refused before it starts.
MAX_WORK_PIXELS = 8_000_000
MAX_WINDOWS = 1024  # sliding-window passes per image and scale
MULTISCALE = (0.75, 1.0, 1.25, 1.5, 1.75)  # the LSeg paper's multi-scale evaluation (`--multiscale`)


class Segmenter(InferenceBase):
    """An LSeg network, its text encoder and its preprocessing:
    ``prepare`` (resize, normalize) -> the network (whole, windowed, multi-scale) -> label maps."""

    def __init__(self, model: LSegNet, text_encoder: TextEncoder, config: LSegConfig | None = None,
                 device: str | torch.device = "cpu", source: str = "", label_offsets: dict | None = None,
                 relay_vocabulary: list[str] | None = None, relay_top_k: int = 0, background: str = "other",
                 relay_hubness: float = 0.0):
        super().__init__(model, text_encoder, source, device)
        # calibration the model file carries (e.g. {"other": -2.5}, see `zeroseg calibrate`): added
        # to the logits of labels of these names on every call; {} switches it off
        self.label_offsets: dict[str, float] = {str(k): float(v) for k, v in (label_offsets or {}).items()}
        # seen-class relay (zeroseg.relay): name pixels through the top-k of the trained vocabulary;
        # 0 switches it off. The model file records both (`zeroseg calibrate` chooses k).
        self.relay_vocabulary: list[str] = [v for v in (relay_vocabulary or []) if v != background]
        self.relay_top_k = int(relay_top_k)
        # how much each asked label is lowered for being near many trained names
        # (zeroseg.relay.relay_similarity); chosen on val like relay_top_k
        self.relay_hubness = float(relay_hubness)
        self.background = background
        self.config = config or model.config
        self.mean = torch.tensor(self.config.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.config.std).view(1, 3, 1, 1)
        self._feature_sources: dict = {}  # spectral feature networks, built on first use

    # -- tensors in, tensors out ---------------------------------------------------------
    def text_embeddings(self, labels: list[str]) -> torch.Tensor:
        return self.embed(labels)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8-range or [0, 1] RGB [B, 3, H, W] -> the network's input normalization."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, labels: list[str]) -> torch.Tensor:
        """Normalized images [B, 3, H, W] -> logits [B, len(labels), H, W] (any H, W: padded inside)."""
        text = self.text_embeddings(labels)
        return self._logits(x.to(self.device), text)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (the mean colour after normalization) to multiples of the model's stride."""
        h, w = x.shape[-2:]
        s = self.model.stride
        ph, pw = (-h) % s, (-w) % s
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def _logits(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.model(self._pad(x), text)[..., :h, :w]

    def _relayed(self, x: torch.Tensor, text: torch.Tensor, num_labels: int, own: torch.Tensor,
                 similarity: torch.Tensor, background: int | None) -> torch.Tensor:
        """The relay's logits [B, num_labels, H, W] for one whole (unwindowed) input. The relay
        runs at the network's half resolution, before the x2 upsampling: its softmax over the
        whole trained vocabulary is most of the cost, and a quarter of the pixels changes well
        under 0.1% of the decisions (measured on the synthetic test split)."""
        h, w = x.shape[-2:]
        half = self.model(self._pad(x), text, upsample=False)
        out = relay_logits(half[:, :num_labels] + own, half[:, num_labels:], similarity, background,
                           self.relay_top_k, float(self.config.logit_scale))
        return upsample_logits(out)[..., :h, :w]

    # -- images in, label maps out -------------------------------------------------------
    @staticmethod
    def _needs_windows(x: torch.Tensor, window: int | None) -> bool:
        return bool(window) and max(x.shape[-2:]) > window

    def _windowed(self, x: torch.Tensor, text: torch.Tensor, window: int | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if not self._needs_windows(x, window):
            return self._logits(x, text)
        stride = max(1, window * 2 // 3)
        out = torch.zeros(x.shape[0], text.shape[0], h, w, device=x.device)
        count = torch.zeros(1, 1, h, w, device=x.device)
        ys = sorted({*range(0, max(h - window, 0) + 1, stride), max(h - window, 0)})
        xs = sorted({*range(0, max(w - window, 0) + 1, stride), max(w - window, 0)})
        for y0 in ys:
            for x0 in xs:
                crop = x[..., y0:y0 + window, x0:x0 + window]
                out[..., y0:y0 + crop.shape[-2], x0:x0 + crop.shape[-1]] += self._logits(crop, text)
                count[..., y0:y0 + crop.shape[-2], x0:x0 + crop.shape[-1]] += 1
        return out / count

    def spectral_feature_source(self, spec: str):
        """The callable image -> features [C, h, w] for ``spec`` (see ``parse_feature_source``),
        built on first use and kept by this segmenter (a network load costs seconds)."""
        from .spectral.features import ImageNetFeatures, parse_feature_source  # heavy: scipy

        if spec not in self._feature_sources:
            opts = parse_feature_source(spec)
            if opts.pop("kind") != "imagenet":
                raise ZerosegError(f"{spec!r} is not a separate feature network")
            self._feature_sources[spec] = ImageNetFeatures(**opts)
        return self._feature_sources[spec]

    def _background_index(self, labels: list[str]) -> int | None:
        """Where the background label sits among ``labels`` (None: not asked)."""
        return labels.index(self.background) if self.background in labels else None

    def _own_offsets(self, labels: list[str]) -> torch.Tensor:
        """The model file's ``label_offsets`` for ``labels``, shaped [1, C, 1, 1] for logits."""
        return torch.tensor([self.label_offsets.get(lab, 0.0) for lab in labels], device=self.device).view(1, -1, 1, 1)

    def relay_settings(self) -> dict:
        """The relay's constructor arguments (what an ONNX export stores)."""
        return {"relay_vocabulary": list(self.relay_vocabulary), "relay_top_k": self.relay_top_k,
                "background": self.background, "relay_hubness": self.relay_hubness}

    def set_templates(self, templates: list[str]) -> None:
        """Use prompt templates such as ``"a photo of a {}"`` (embeddings are re-computed)."""
        inner = self.text_encoder.inner
        inner.templates = inner.checked_templates(templates)
        self.text_encoder = CachedTextEncoder(inner)

    def input_size(self, h: int, w: int, short_side: int | None = None, scale: float = 1.0) -> tuple[int, int]:
        """The network input's (height, width) for an h x w image (see ``prepare``)."""
        if short_side is not None and short_side < 0:
            raise ZerosegError(f"short side must be >= 0 (0 keeps the image size), got {short_side}")
        base = self.config.input_size if short_side is None else (short_side or min(h, w))
        factor = base * scale / min(h, w)
        return max(1, round(h * factor)), max(1, round(w * factor))

    def check_work(self, h: int, w: int, short_side: int | None, scale: float, window: int | None,
                   max_pixels: int = MAX_WORK_PIXELS) -> None:
        """Refuse work that would exhaust memory or time, with one line saying why."""
        ih, iw = self.input_size(h, w, short_side, scale)
        if ih * iw > max_pixels:
            raise ZerosegError(f"a {w}x{h} image becomes {iw}x{ih} = {ih * iw / 1e6:.1f} megapixels at this short "
                               f"side, over the limit of {max_pixels / 1e6:g} (max_pixels / --max-pixels); "
                               "lower --short-side or crop the image")
        if window is not None:
            if window < self.model.stride:
                raise ZerosegError(f"window must be at least the model stride ({self.model.stride} px), got {window}")
            step = max(1, window * 2 // 3)
            passes = (max(ih - window, 0) // step + 2) * (max(iw - window, 0) // step + 2)
            if passes > MAX_WINDOWS:
                raise ZerosegError(f"--window {window} needs about {passes} passes over a {iw}x{ih} input "
                                   f"(limit {MAX_WINDOWS}); use a larger window")

    def prepare(self, array: np.ndarray, short_side: int | None = None, scale: float = 1.0) -> torch.Tensor:
        """uint8 [H, W, 3] (or a batch [B, H, W, 3]) -> the normalized network input [B, 3, h, w]
        (not padded).

        The short side becomes ``short_side`` x ``scale`` (None: the model's ``input_size``;
        0: the image's own size).
        """
        batch = array if array.ndim == 4 else array[None]
        h, w = batch.shape[1:3]
        # channels-last: the layout convolutions run fastest in on the CPU
        x = image_to_tensor(batch).contiguous(memory_format=torch.channels_last).to(self.device)
        size = self.input_size(h, w, short_side, scale)
        base = self.config.input_size if short_side is None else (short_side or min(h, w))
        factor = base * scale / min(h, w)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
        return self.normalize(x)

    @torch.no_grad()
    def decoder_features(self, image, short_side: int | None = None) -> torch.Tensor:
        """The decoder's fused features [C, ceil(h/2), ceil(w/2)] of the prepared image."""
        x = self.prepare(self.as_rgb_array(image), short_side)
        h, w = x.shape[-2:]
        feats = self.model.decoder_features(self._pad(x))[0]
        return feats[:, : (h + 1) // 2, : (w + 1) // 2].float().cpu()

    def segment(self, image, labels: list[str], *, short_side: int | None = None, window: int | None = None,
                scales: tuple[float, ...] = (1.0,), flip: bool = False, refine: str | None = None,
                refine_options: dict | None = None, logit_offsets: list[float] | None = None,
                max_pixels: int = MAX_WORK_PIXELS) -> Segmentation:
        """Segment one image (path, PIL image or uint8 array [H, W, 3]) into ``labels``.

        The image is resized so its short side is ``short_side`` (None: the model's
        ``input_size``; 0: keep the image's size), run whole
        or in sliding windows of ``window`` pixels, optionally at several ``scales`` and
        flipped (the paper's multi-scale + flip evaluation); logits are averaged at the
        image's own resolution. ``refine="spectral"`` fuses the prediction with spectral
        eigen-segments of the decoder features (SAZS; see ``zeroseg.spectral.fusion``), using
        no ground truth. ``logit_offsets`` (one number per label) are added to the averaged logits
        before the softmax, on top of the model's own ``label_offsets``: generalized zero-shot
        calibration lowers the trained classes' scores.
        Work is bounded: an input over ``max_pixels`` after resizing, or more than ``MAX_WINDOWS``
        sliding windows, is refused before anything runs.
        """
        return self.segment_batch([image], labels, short_side=short_side, window=window, scales=scales, flip=flip,
                                  refine=refine, refine_options=refine_options, logit_offsets=logit_offsets,
                                  max_pixels=max_pixels)[0]

    @torch.no_grad()
    def segment_batch(self, images: list, labels: list[str], *, short_side: int | None = None,
                      window: int | None = None, scales: tuple[float, ...] = (1.0,), flip: bool = False,
                      refine: str | None = None, refine_options: dict | None = None,
                      logit_offsets: list[float] | None = None,
                      max_pixels: int = MAX_WORK_PIXELS) -> list[Segmentation]:
        """``segment`` for several images of one size in one network pass per scale (and flip).

        Each result's ``seconds`` is the batch's time divided by its size.
        """
        start = time.perf_counter()
        arrays = [self.as_rgb_array(image) for image in images]
        if not arrays:
            return []
        if len({a.shape for a in arrays}) > 1:
            raise ZerosegError("segment_batch needs images of one size; got "
                               + ", ".join(sorted({f"{a.shape[1]}x{a.shape[0]}" for a in arrays})))
        labels = list(labels)
        h, w = arrays[0].shape[:2]
        self.check_work(h, w, short_side, max(scales), window, max_pixels)
        if refine is not None and refine != "spectral":
            raise ZerosegError(f"unknown refinement {refine!r}; expected 'spectral'")
        if logit_offsets is not None and len(logit_offsets) != len(labels):
            raise ZerosegError(f"logit_offsets has {len(logit_offsets)} values for {len(labels)} labels")
        text = self.text_embeddings(labels)
        relay = self.relay_top_k > 0 and bool(self.relay_vocabulary)
        if relay:  # the vocabulary's logits come from the same network pass
            vocabulary = self.text_embeddings(self.relay_vocabulary)
            similarity = relay_similarity(vocabulary, text, self.relay_hubness)
            text = torch.cat([text, vocabulary])
            background = self._background_index(labels)
        batch = np.stack(arrays)
        own = self._own_offsets(labels)
        total = torch.zeros(len(arrays), len(labels), h, w, device=self.device)
        for scale in scales:
            xs = self.prepare(batch, short_side, scale)
            for flipped in ((False, True) if flip else (False,)):
                inp = xs.flip(-1) if flipped else xs
                if relay and not self._needs_windows(inp, window):
                    out = self._relayed(inp, text, len(labels), own, similarity, background)
                else:
                    both = self._windowed(inp, text, window)
                    out = both[:, :len(labels)] + own
                    if relay:  # per pass, at the network's resolution (cheaper than at the image's)
                        out = relay_logits(out, both[:, len(labels):], similarity, background, self.relay_top_k,
                                           float(self.config.logit_scale))
                out = out.flip(-1) if flipped else out
                total += F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        total = total / (len(scales) * (2 if flip else 1))
        if logit_offsets is not None and any(logit_offsets):
            total = total + torch.tensor([float(o) for o in logit_offsets], device=total.device).view(1, -1, 1, 1)
        results = []
        for array, logits in zip(arrays, total):
            probs = torch.softmax(logits, dim=0).cpu().numpy()  # per image: the same rounding at any batch size
            label_map = probs.argmax(axis=0).astype(np.int32)
            info: dict = {}
            if refine == "spectral":
                from .spectral.fusion import spectral_refine  # heavy: scipy

                options = {"background": self._background_index(labels),
                           **(refine_options or {})}
                label_map, info = spectral_refine(self, array, probs, short_side=short_side, **options)
            results.append(Segmentation(label_map, probs, labels, info=info))
        for seg in results:
            seg.seconds = (time.perf_counter() - start) / len(results)
        return results

    @torch.no_grad()
    def relay_label_maps(self, image, labels: list[str], settings: list[tuple[int, float]],
                         short_side: int | None = None) -> list[np.ndarray]:
        """Label maps [H, W] of one image for each relay setting ``(top_k, hubness)`` (top_k 0:
        the relay off), from one network pass: each is ``segment(image, labels).label_map`` with
        the segmenter's ``relay_top_k`` and ``relay_hubness`` set to it (one scale, no flip, no
        windows, its own ``label_offsets``). Calibration tries many settings at the cost of one."""
        if not self.relay_vocabulary:
            raise ZerosegError("the model records no training labels to relay through")
        array = self.as_rgb_array(image)
        h0, w0 = array.shape[:2]
        self.check_work(h0, w0, short_side, 1.0, None, MAX_WORK_PIXELS)
        labels = list(labels)
        text, vocabulary = self.text_embeddings(labels), self.text_embeddings(self.relay_vocabulary)
        background = self._background_index(labels)
        own = self._own_offsets(labels)
        x = self.prepare(array, short_side)
        h, w = x.shape[-2:]
        padded, both = self._pad(x), torch.cat([text, vocabulary])
        if hasattr(self.model, "score"):  # one encoder pass; the label-set-dependent part twice
            pixels = self.model.pixel_embeddings(padded)
            half, direct = self.model.score(pixels, both, upsample=False), None
            if any(k <= 0 for k, _ in settings):  # spatial blocks may mix labels: score the asked ones alone
                direct = self.model.score(pixels, text, upsample=False)
        else:
            half = self.model(padded, both, upsample=False)
            direct = self.model(padded, text, upsample=False) if any(k <= 0 for k, _ in settings) else None
        asked, vocabulary_logits = half[:, :len(labels)] + own, half[:, len(labels):]
        similarities: dict[float, torch.Tensor] = {}
        weights: dict[int, torch.Tensor] = {}  # the softmax and top-k: once per top_k
        maps = []
        for top_k, hubness in settings:
            if top_k > 0:
                if hubness not in similarities:
                    similarities[hubness] = relay_similarity(vocabulary, text, hubness)
                if top_k not in weights:
                    weights[top_k] = relay_weights(vocabulary_logits, int(top_k))
                out = relay_logits(asked, vocabulary_logits, similarities[hubness], background, int(top_k),
                                   float(self.config.logit_scale), weights[top_k])
            else:
                out = direct + own
            # channels-last: the arg-max over labels then reads contiguous memory (4x faster here)
            out = upsample_logits(out.contiguous(memory_format=torch.channels_last))[..., :h, :w]
            if (h, w) != (h0, w0):  # (the same size is the identity)
                out = F.interpolate(out, size=(h0, w0), mode="bilinear", align_corners=False)
            maps.append(out[0].argmax(dim=0).cpu().numpy().astype(np.int32))
        return maps


def load_model(source: str | Path = "default", arch_option: int = 0, block_depth: int = 0,
               device: str = "cpu") -> Segmenter:
    """A ready ``Segmenter`` from an official LSeg ``.ckpt``, a zeroseg ``.safetensors`` or a name.

    ``arch_option`` and ``block_depth`` matter only for official checkpoints, which do not
    record them (all released ones use 0).
    """

    src = str(source)
    path = Path(src)
    if not path.exists():
        bundled = registry.bundled_weights_path(src, "lseg")
        if bundled is not None:
            if not bundled.is_file():
                raise ZerosegError(f"model {src!r} is not installed (missing {bundled})")
            path = bundled
        elif registry.model_family(src) == "zsi":
            raise ZerosegError(f"{src!r} is an instance model: use load_instance_model / `zeroseg instances`")
        elif src in registry.list_models():
            raise ZerosegError(f"model {src!r} is an architecture without bundled weights; "
                               "give the path of an official LSeg .ckpt or a zeroseg .safetensors")
        elif src.endswith((".ckpt", ".pt", ".pth", ".safetensors")) or "/" in src:
            raise ZerosegError(f"model file not found: {src}")
        else:
            raise ZerosegError(f"unknown model {src!r}; known names: {', '.join(registry.list_weights('lseg'))}, "
                               "or a path to a .ckpt / .safetensors file")
    if path.is_dir():
        raise ZerosegError(f"expected a model file, got a directory: {path}")
    if path.suffix.lower() == ".onnx":
        return load_onnx_model(path, device=device)
    with open(path, "rb") as f:
        magic = f.read(2)
    relay: dict = {}  # the seen-class relay needs the training labels a zeroseg file records
    if magic == b"PK":  # torch.save's zip container
        model, text, cfg = loading.load_official_checkpoint(path, arch_option, block_depth)
        offsets = None
    else:
        model, text, cfg = loading.load_safetensors_model(path)
        extra = loading.model_extra(path)
        offsets = extra.get("label_offsets")
        trained = list(extra.get("labels") or [])  # "other" first, then the training classes
        if trained:
            relay = {"relay_vocabulary": trained[1:], "relay_top_k": int(extra.get("relay_top_k", 0)),
                     "background": trained[0], "relay_hubness": float(extra.get("relay_hubness", 0.0))}
    return Segmenter(model, text, cfg, device=device, source=src, label_offsets=offsets, **relay)


def load_onnx_model(path: str | Path, device: str = "cpu", text_model: str | Path | None = None,
                    threads: int | None = None) -> Segmenter:
    """A ``Segmenter`` running a ``zeroseg export`` file with onnxruntime; labels are embedded by
    the text encoder named in the file (or the text tower of ``text_model``, a zeroseg
    .safetensors / official .ckpt, for CLIP towers that live inside checkpoints)."""
    from .export import OnnxLSeg  # optional: onnxruntime

    network = OnnxLSeg(path, threads=threads)
    text = load_model(text_model).text_encoder if text_model is not None \
        else create_text_encoder(network.text_encoder_spec)
    return Segmenter(network, text, network.config, device=device, source=str(path),
                     label_offsets=network.label_offsets, **network.relay)


def fold_model_loader(template: str | Path, arch_option: int = 0, block_depth: int = 0, device: str = "cpu"):
    """``fold -> Segmenter`` for ``zeroseg.eval.real.evaluate_dataset``: LSeg releases one checkpoint
    per fold, so ``{fold}`` in ``template`` (e.g. ``ckpt/pascal_fold{fold}.ckpt``) is replaced by
    the fold; one model is kept in memory at a time."""
    loaded: dict[str, Segmenter] = {}

    def load(fold: int | None) -> Segmenter:
        source = str(template).replace("{fold}", str(fold)) if fold is not None else str(template)
        if source not in loaded:
            loaded.clear()
            loaded[source] = load_model(source, arch_option, block_depth, device=device)
        return loaded[source]

    return load
