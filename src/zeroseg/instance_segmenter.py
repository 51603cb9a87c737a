"""Zero-shot instance segmentation API: ``load_instance_model()``, ``InstanceSegmenter``, ``Instances``.

    seg = zeroseg.load_instance_model("default-instances")
    found = seg.detect("photo.png", ["violin", "pear", "duck"])
    found.boxes, found.scores, found.names(), found.masks   # [N, 4] xyxy, [N], N names, bool [N, H, W]

ZSI scores every detection against the embeddings of the labels you pass, so labels the model
never saw in training work the same way as seen ones. Generalized ZSI (seen + unseen labels
together) favours seen classes; ``calibration`` subtracts a constant from their scores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ZerosegError
from .eval.coco_metrics import to_coco_results
from .images import image_to_tensor
from .inference import InferenceBase
from .mask_naming import candidate_threshold, mask_label_probabilities, naming_settings, rescore, semantic_labels
from .models.loading import text_encoder_spec
from .models.registry import bundled_weights_path, list_weights
from .models.zsi.model import load_zsi_model
from .relay import BoxRelay
from .text import create_text_encoder
from .text.base import TextEncoder

__all__ = ["Instances", "InstanceSegmenter", "load_instance_model"]


@dataclass
class Instances:
    """Detections of one image, best score first.

    ``boxes`` float [N, 4] (x1, y1, x2, y2 in pixels), ``scores`` [N], ``label_ids`` [N]
    (indices into ``labels``), ``masks`` bool [N, H, W].
    """

    boxes: np.ndarray
    scores: np.ndarray
    label_ids: np.ndarray
    masks: np.ndarray
    labels: list[str]
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def top(self, k: int) -> "Instances":
        """The ``k`` best-scoring detections (they are stored best first)."""
        info = {key: (v[:k] if isinstance(v, np.ndarray) else v) for key, v in self.info.items()}
        return Instances(self.boxes[:k], self.scores[:k], self.label_ids[:k], self.masks[:k], self.labels,
                         self.seconds, info)

    def names(self) -> list[str]:
        return [self.labels[int(i)] for i in self.label_ids]

    def renamed(self, weight: float) -> "Instances":
        """These detections rescored with mask naming at ``weight`` (``zeroseg.mask_naming``), best
        first: needs the detector's scores and the namer's ``q`` in ``info`` (a segmenter with a
        namer records them)."""
        if "naming_q" not in self.info:
            raise ZerosegError("these detections carry no mask-naming opinion (detect with a namer)")
        raw, q = self.info["detector_scores"], self.info["naming_q"]
        scores = rescore(raw, q, weight)
        order = np.argsort(-scores, kind="stable")
        info = {**self.info, "detector_scores": raw[order], "naming_q": q[order], "naming_weight": float(weight)}
        return Instances(self.boxes[order], scores[order], self.label_ids[order], self.masks[order], self.labels,
                         self.seconds, info)

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO result dicts (RLE masks); ``category_ids[i]`` is the id of ``labels[i]`` (default i + 1).
        A negative id leaves that label's detections out (before their masks are encoded)."""

        ids = np.asarray(category_ids if category_ids is not None else range(1, len(self.labels) + 1))
        cats = ids[self.label_ids] if len(self) else np.zeros(0, np.int64)
        keep = np.flatnonzero(cats >= 0)
        if len(keep) == len(cats):
            return to_coco_results(image_id, self.boxes, self.scores, cats, self.masks)
        return to_coco_results(image_id, self.boxes[keep], self.scores[keep], cats[keep], self.masks[keep])


DEFAULT_RELAY_SCALE = 10.0  # relay logits per unit of text cosine, when a model file does not say


class InstanceSegmenter(InferenceBase):
    """A ZSI model with its frozen text encoder (label embeddings cached): images -> the detector
    (its own resize and normalization) -> boxes, masks and scores above the threshold."""

    def __init__(self, model: torch.nn.Module, text_encoder: TextEncoder, source: str = "",
                 extra: dict | None = None, device: str = "cpu", namer: Any = None, naming_weight: float | None = None):
        super().__init__(model, text_encoder, source, device)
        self.config = model.config
        self.extra = dict(extra or {})
        # the seen-class relay (zeroseg.relay.BoxRelay): off unless the model file chose it on val
        self.relay_top_k = int(self.extra.get("relay_top_k", 0))
        self.relay_scale = float(self.extra.get("relay_scale", DEFAULT_RELAY_SCALE))
        # its correction of hub labels (zeroseg.relay.relay_similarity), also chosen on val
        self.relay_hubness = float(self.extra.get("relay_hubness", 0.0))
        # the GZSI calibration C chosen on val with the relay (`zeroseg calibrate-instances`)
        self.gzsi_calibration = float((self.extra.get("gzsi_calibration") or {}).get("calibration", 0.0))
        # mask naming (zeroseg.mask_naming): a semantic Segmenter's probability of each detection's
        # label inside its mask, mixed into the score with this weight (0: the detector alone)
        self.namer = namer
        self.naming_weight = float(naming_settings(self.extra)[1] if naming_weight is None else naming_weight)
        if not 0.0 <= self.naming_weight <= 1.0:
            raise ZerosegError(f"mask naming weight must be in [0, 1], got {self.naming_weight}")

    @property
    def seen(self) -> list[str]:
        """The classes the model was trained on (from its file; empty if unknown)."""
        return list(self.extra.get("labels", []))

    def relay_settings(self) -> dict:
        """What a model file records of the relay and mask naming (``zeroseg calibrate-instances``
        chooses them): what ``--resume`` must match."""
        settings = {"relay_top_k": self.relay_top_k, "relay_scale": self.relay_scale}
        if self.relay_hubness:  # only then: outputs written before it existed still resume
            settings["relay_hubness"] = self.relay_hubness
        if self.naming_active:
            settings["mask_naming"] = {"model": getattr(self.namer, "source", ""), "weight": self.naming_weight}
        return settings

    @property
    def naming_active(self) -> bool:
        return self.namer is not None and self.naming_weight > 0.0

    def box_relay(self, labels: list[str], label_embeddings: torch.Tensor) -> BoxRelay | None:
        """The relay through the trained classes for this label set, or None when it is off."""
        if self.relay_top_k <= 0 or not self.seen:
            return None
        return BoxRelay.from_text(self.embed(self.seen), label_embeddings, self.relay_top_k, self.relay_scale,
                                  self.relay_hubness)

    def mask_naming_q(self, array: np.ndarray, labels: list[str], masks: np.ndarray,
                      label_ids: np.ndarray) -> np.ndarray:
        """The namer's mean probability of each detection's label inside its mask ([N])."""
        if not len(label_ids):
            return np.zeros(0, np.float32)
        background = getattr(self.namer, "background", None)
        seg = self.namer.segment(array, semantic_labels(labels, background))
        return mask_label_probabilities(seg.probs, masks, label_ids)

    def embeddings(self, labels: list[str]) -> torch.Tensor:
        return self.embed(self.check_labels(labels))  # empty or duplicate labels are errors

    def _seen_set(self, seen_labels: list[str] | None) -> set[str]:
        return set(self.seen if seen_labels is None else seen_labels)

    def default_calibration(self, labels: list[str], seen_labels: list[str] | None = None) -> float:
        """The model file's GZSI calibration where ``labels`` mix trained and new names, else 0:
        C only trades seen against unseen names, and lowering every asked label alike would just
        deflate the scores."""
        return self.gzsi_calibration if self.mixes_trained_and_new(labels, seen_labels) else 0.0

    def mixes_trained_and_new(self, labels: list[str], seen_labels: list[str] | None = None) -> bool:
        """Whether ``labels`` hold both names the model trained on (``seen_labels``, by default its
        own) and new ones: the generalized (GZSI) setting."""
        seen = self._seen_set(seen_labels)
        return any(n in seen for n in labels) and any(n not in seen for n in labels)

    def names_by_mask(self, labels: list[str], seen_labels: list[str] | None = None) -> bool:
        """Whether mask naming runs for these labels: a namer is set and the labels do not mix
        trained and new names. In the mixed (GZSI) setting the semantic model's own bias towards
        its training classes would overrule the detector (val, calibration classes as the new
        ones: harmonic mean mAP@0.5 4.2 with it at its best C, 10.4 without)."""
        return self.namer is not None and not self.mixes_trained_and_new(labels, seen_labels)

    def logit_offsets(self, labels: list[str], seen_labels: list[str] | None, calibration: float) -> torch.Tensor | None:
        """[1 + C]: -calibration on the seen labels' scores (GZSI calibration), 0 elsewhere."""
        if not calibration:
            return None
        seen = self._seen_set(seen_labels)
        offsets = torch.zeros(len(labels) + 1)
        for i, name in enumerate(labels):
            if name in seen:
                offsets[i + 1] = -float(calibration)
        return offsets.to(self.device)

    MIN_RESIZED_SIDE = 16  # pixels: below this the backbone's stride-32 level would be empty

    def check_work(self, h: int, w: int) -> None:
        """The detector resizes so the short side is ``min_size`` unless the long side would pass
        ``max_size``; refuse an image whose short side would then shrink to a few pixels."""
        cfg = self.model.config
        factor = min(cfg.min_size / min(h, w), cfg.max_size / max(h, w))
        if min(h, w) * factor < self.MIN_RESIZED_SIDE:
            raise ZerosegError(f"a {w}x{h} image is too elongated for the detector: resized to fit "
                               f"{cfg.max_size} px its short side would be {min(h, w) * factor:.1f} px "
                               f"(at least {self.MIN_RESIZED_SIDE}); crop it first")

    def detect(self, image, labels: list[str], *, seen_labels: list[str] | None = None, calibration: float | None = None,
               score_threshold: float = 0.05, mask_threshold: float = 0.5, max_detections: int = 100,
               nms_across_labels: float | None = None) -> Instances:
        """Instances of ``labels`` in ``image`` (a path, PIL image or uint8 [H, W, 3]).

        Detection keeps one box per label (per-label NMS, as COCO evaluation expects), so an
        object may come back under several labels; ``nms_across_labels=IOU`` keeps only the
        best-scoring label where boxes of different labels overlap by more than IOU (for display).
        ``calibration`` (GZSI: subtracted from the scores of ``seen_labels``, by default the classes
        the model trained on) defaults to ``default_calibration``; pass 0 for none.
        """
        return self.detect_batch([image], labels, seen_labels=seen_labels, calibration=calibration,
                                 score_threshold=score_threshold, mask_threshold=mask_threshold,
                                 max_detections=max_detections, nms_across_labels=nms_across_labels)[0]

    @torch.no_grad()
    def detect_batch(self, images: list, labels: list[str], *, seen_labels: list[str] | None = None,
                     calibration: float | None = None, score_threshold: float = 0.05, mask_threshold: float = 0.5,
                     max_detections: int = 100, nms_across_labels: float | None = None) -> list[Instances]:
        """``detect`` for several images (any sizes) in one network pass. The detector pads a batch
        to its largest image, so results near the borders can differ slightly from one at a time."""
        labels = self.check_labels(labels)
        if calibration is None:
            calibration = self.default_calibration(labels, seen_labels)
        arrays = [self.as_rgb_array(image) for image in images]
        for array in arrays:
            self.check_work(*array.shape[:2])
        start = time.perf_counter()
        emb = self.embed(labels)  # labels checked above
        xs = [image_to_tensor(a).to(self.device) for a in arrays]
        naming = self.names_by_mask(labels, seen_labels)
        weight = self.naming_weight if naming else 0.0
        # box-label candidates that cannot reach score_threshold are never kept: the detector drops
        # them before NMS and the mask head (at 0, every pair competes for max_detections)
        outputs = self.model(xs, emb, logit_offsets=self.logit_offsets(labels, seen_labels, calibration),
                             relay=self.box_relay(labels, emb),
                             score_thresh=candidate_threshold(score_threshold, weight)) if xs else []
        results = []
        for array, out in zip(arrays, outputs):
            boxes, scores = out["boxes"].cpu(), out["scores"].cpu()
            label_ids = (out["labels"] - 1).cpu()
            masks = out["masks"][:, 0].cpu() >= mask_threshold
            info: dict[str, Any] = {}
            if naming:  # the namer's opinion is recorded even at weight 0
                q = self.mask_naming_q(array, labels, masks.numpy(), label_ids.numpy())
                info = {"detector_scores": scores.numpy(), "naming_q": q, "naming_weight": weight}
                scores = torch.from_numpy(rescore(scores.numpy(), q, weight))
            keep = scores >= score_threshold
            if nms_across_labels:
                from torchvision.ops import nms  # heavy

                survivors = torch.zeros_like(keep)
                survivors[nms(boxes, scores, float(nms_across_labels))] = True
                keep &= survivors
            order = torch.sort(scores[keep], descending=True, stable=True).indices[:max_detections]
            pick = lambda t: t[keep][order]  # noqa: E731
            if info:
                info = {k: (v[keep.numpy()][order.numpy()] if isinstance(v, np.ndarray) else v)
                        for k, v in info.items()}
            results.append(Instances(boxes=pick(boxes).numpy(), scores=pick(scores).numpy(),
                                     label_ids=pick(label_ids).numpy(), masks=pick(masks).numpy(),
                                     labels=labels, info=info))
        for found in results:
            found.seconds = (time.perf_counter() - start) / len(results)
        return results


def load_instance_model(source: str | Path = "default-instances", device: str = "cpu",
                        text_encoder: TextEncoder | str | None = None, mask_naming: bool = True) -> InstanceSegmenter:
    """A ready ``InstanceSegmenter`` from a registered name with bundled weights or a zeroseg file.

    Where the file chose mask naming (``zeroseg.mask_naming``), the semantic model it names is
    loaded too; ``mask_naming=False`` leaves it off (the detector's scores alone)."""

    path = bundled_weights_path(str(source), "zsi")
    if path is None:
        path = Path(source)
        if not path.is_file():
            raise ZerosegError(f"unknown instance model {str(source)!r}: not a file and not one of "
                               f"{', '.join(list_weights('zsi'))}")
    elif not path.is_file():
        raise ZerosegError(f"the bundled weights of {source!r} are missing from the installation ({path})")
    model, extra = load_zsi_model(path)
    if text_encoder is None:
        text_encoder = text_encoder_spec(model.config.text_encoder, extra)
    if isinstance(text_encoder, str):
        text_encoder = create_text_encoder(text_encoder, cache=False)
    namer_source, weight = naming_settings(extra)
    namer = None
    if mask_naming and namer_source:
        from .api import load_model  # optional: only where the file chose mask naming

        namer = load_model(namer_source, device=device)
    return InstanceSegmenter(model, text_encoder, source=str(source), extra=extra, device=device, namer=namer,
                             naming_weight=weight if namer is not None else 0.0)

