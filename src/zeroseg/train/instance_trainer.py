"""Training ZSI (zero-shot instance segmentation) on the seen classes of a dataset.

Same engine as semantic training (config + overrides, resume, DDP via torchrun, progress,
atomic checkpoints; see trainer.py); what differs is the task: the model is a ``ZSIModel``,
every image's instances come from its label map (one per class present, as in the synthetic
benchmark), and model selection uses seen-class mask AP@0.5 on the first ``val_images`` val
images. Unseen classes never reach this module: the seen-only checks of
``SeenSegmentationDataset`` refuse any image that shows one, and on COCO (``dataset: coco_zsi``)
``CocoZsiInstances`` drops every image holding an unseen instance (Bansal et al.'s protocol).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.coco_instances import mask_annotation
from ..data.datasets.coco_zsi import CocoZsiInstances, coco_zsi_split
from ..errors import ZerosegError
from ..eval.coco_metrics import evaluate_coco, to_coco_results
from ..images import image_to_tensor
from ..models.loading import SAFETENSORS_FORMAT
from ..models.registry import bundled_weights_path
from ..models.weight_io import read_model_file, read_safetensors
from ..models.zsi import create_zsi_model, load_zsi_model, save_zsi_model
from .config import check_common_config, check_held_out_config, load_config
from .data import AugmentConfig, SeenSegmentationDataset, _color_jitter, _draw_style, apply_style, sample_rng
from .trainer import Trainer

__all__ = ["InstanceTrainer", "SeenInstanceDataset", "instance_collate", "validate_instance_config",
           "train_instances", "load_instance_config"]

DEFAULTS = "instances.yaml"


def validate_instance_config(cfg: dict) -> None:
    check_common_config(cfg, ints=("val_images",), floats=("style_augment",))
    check_held_out_config(cfg)
    if cfg.get("dataset") not in ("synth", "coco_zsi"):
        raise ZerosegError(f"dataset must be synth or coco_zsi, not {cfg.get('dataset')!r}")
    if isinstance(cfg.get("coco_split"), int):  # YAML 1.1 reads 48_17 as the integer 4817
        cfg["coco_split"] = {4817: "48_17", 6515: "65_15"}.get(cfg["coco_split"], cfg["coco_split"])
    if isinstance(cfg.get("coco_split"), str):
        cfg["coco_split"] = cfg["coco_split"].replace("/", "_")
    if cfg["dataset"] == "coco_zsi" and cfg.get("coco_split") not in ("48_17", "65_15"):
        raise ZerosegError(f"coco_split must be 48_17 or 65_15, not {cfg.get('coco_split')!r}")


def load_instance_config(path: str | None, overrides: list[str] | None = None, base: dict | None = None) -> dict:
    return load_config(path, overrides, base, defaults=DEFAULTS, validate=validate_instance_config)


class SeenInstanceDataset(SeenSegmentationDataset):
    """Items ``(image float [3, H, W] in [0, 1], target)`` for torchvision detection models.

    ``target``: boxes [N, 4] xyxy, labels [N] (positions in ``seen_label_set``: 1..C), masks
    uint8 [N, H, W]; one instance per class present. Training adds a flip and colour jitter
    (image size is the model's business: its transform resizes, multi-scale in training).
    Images showing a held-out (calibration) class are dropped, as images showing an unseen class
    are: otherwise their objects would be learned as background.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        held = set(kwargs.get("held_out") or ())
        if held:
            self.entries = [e for e in self.entries if not held.intersection(e.get("classes", []))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.load(i)
        if self.train:
            rng = sample_rng(self.seed, self.epoch, i)
            flip = rng.random() < 0.5
            jitter = rng.uniform(1 - self.augment.color_jitter, 1 + self.augment.color_jitter, size=3)
            if self.augment.hflip and flip:
                image, target = image[:, ::-1], target[:, ::-1]
            style = _draw_style(rng) if self.augment.style > 0 else None
            if self.augment.color_jitter > 0:
                image = _color_jitter(np.ascontiguousarray(image), *jitter)
            if style is not None:
                image = apply_style(np.ascontiguousarray(image), style, self.augment.style)
        return to_tensor(image), instance_target(target)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return image_to_tensor(image)


def instance_target(label_map: np.ndarray) -> dict[str, torch.Tensor]:
    """Boxes (xyxy, pixel edges), labels and masks of each class region of ``label_map`` (0, 255: none)."""
    ids = [int(v) for v in np.unique(label_map) if v not in (0, 255)]
    boxes, masks = [], []
    for c in ids:
        m = label_map == c
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(m)
    h, w = label_map.shape
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(ids, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)) if masks
            else torch.zeros(0, h, w, dtype=torch.uint8)}


def instance_collate(items: list) -> tuple[list, list]:
    """Detection batches are lists (images may differ in size)."""
    return [it[0] for it in items], [it[1] for it in items]


class InstanceTrainer(Trainer):
    DEFAULTS = DEFAULTS
    METRIC = "val_seen_mask_ap50"
    METRIC_TEXT = "val seen mask AP@0.5"
    BACKBONE_PREFIX = "backbone.body."

    validate_config = staticmethod(validate_instance_config)

    def read_data(self) -> None:
        if self.cfg["dataset"] == "synth":
            return super().read_data()

        split = coco_zsi_split(str(self.cfg["coco_split"]))
        self.index = None
        self.held_out: list[str] = []
        self.seen, self.unseen = split["seen"], split["unseen"]
        self.labels = ["background"] + self.seen  # row 0 is the model's own background embedding

    def setup_task(self) -> None:
        cfg = self.cfg
        self.with_edges = False
        self.module = self.build_model()
        self.text = self.embed_labels(self.labels[1:])  # the seen classes; row 0 is the model's background
        if not cfg["init_from"]:
            self.module.set_word_background(self.text_encoder.encode(["background"])[0])
        seed = int(cfg["seed"])
        if cfg["dataset"] == "coco_zsi":  # seen classes only; images showing an unseen class are dropped

            split = str(cfg["coco_split"])
            self.train_ds = CocoZsiInstances(cfg["data"], "train", split, "seen", hflip=bool(cfg["hflip"]), seed=seed)
            self.val_ds = CocoZsiInstances(cfg["data"], "val", split, "seen")
        else:
            aug = AugmentConfig(hflip=bool(cfg["hflip"]), color_jitter=float(cfg["color_jitter"]),
                                style=float(cfg["style_augment"]))
            self.train_ds = SeenInstanceDataset(self.index, "train", (0, 0, 0), (1, 1, 1), train=True,
                                                augment=aug, seed=seed, held_out=self.held_out)
            self.val_ds = SeenInstanceDataset(self.index, "val", (0, 0, 0), (1, 1, 1), train=False,
                                              held_out=self.held_out)
        self.collate_fn = instance_collate

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        if cfg["init_from"]:
            model, _extra = load_zsi_model(cfg["init_from"])
            return model.train()
        try:
            model = create_zsi_model(cfg["model"], **dict(cfg["model_overrides"] or {}))
        except (ValueError, TypeError) as e:
            raise ZerosegError(f"cannot build instance model {cfg['model']!r}: {e}") from None
        if cfg["backbone_init"]:
            init_backbone_from_lseg(model, cfg["backbone_init"])
        return model.train()

    def after_to_device(self) -> None:
        self.unused_parameters = []

    def train_step(self, batch: tuple[list, list]) -> torch.Tensor:
        d = self.dist
        lr = self._set_lr()
        images = [x.to(d.device, non_blocking=True) for x in batch[0]]
        targets = [{k: v.to(d.device, non_blocking=True) for k, v in t.items()} for t in batch[1]]
        with self._autocast():
            parts = self.model(images, self.text, targets)
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise ZerosegError(f"training diverged at step {self.global_step}: loss {float(loss)} "
                               f"({ {k: round(float(v), 4) for k, v in parts.items()} }); lower lr")
        self._optimize(loss)
        self.lr = lr
        return loss.detach()

    @torch.no_grad()
    def validate(self) -> float:
        """Seen-class mask AP@0.5 on the first ``val_images`` val images (rank 0 scores, others wait)."""
        score = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        if self.dist.main:
            self.module.eval()
            try:
                score += seen_mask_ap50(self.module, self.text, self.val_ds, int(self.cfg["val_images"]))
            finally:
                self._train_mode()
        return float(self.dist.all_reduce_sum(score))

    def save_model(self, path, completed_epochs: int, val: float) -> None:
        extra = {"epoch": completed_epochs, "global_step": self.global_step,
                 self.METRIC: None if math.isnan(val) else val, "labels": self.labels[1:],
                 "seen": self.seen, "unseen": self.unseen, "dataset": str(self.cfg["data"]),
                 "calibration_classes": list(self.held_out),
                 "train_text_encoder": self.trained_text_encoder()}
        save_zsi_model(path, self.module, extra=extra)


def seen_mask_ap50(model: nn.Module, text: torch.Tensor, dataset, n_images: int) -> float:
    """Mask AP@0.5 of ``model`` on the first ``n_images`` items ``(image, target)`` of ``dataset``.

    The labels are the dataset's seen classes (``text`` rows); the ground truth is the targets.
    """

    device = next(model.parameters()).device
    images, annotations, results = [], [], []
    for i in range(min(n_images, len(dataset))):
        x, target = dataset[i]
        images.append({"id": i + 1, "width": int(x.shape[-1]), "height": int(x.shape[-2])})
        for label, mask in zip(target["labels"].tolist(), target["masks"].numpy().astype(bool)):
            if mask.any():
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **mask_annotation(label, mask)})
        det = model([x.to(device)], text)[0]
        results += to_coco_results(i + 1, det["boxes"], det["scores"], det["labels"],
                                   (det["masks"][:, 0] >= 0.5).cpu())
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": str(c)} for c in range(1, text.shape[0] + 1)]}
    m = evaluate_coco(gt, results, iou_type="segm")["map50"]
    return 0.0 if m is None else float(m)


def init_backbone_from_lseg(model: nn.Module, source: str) -> int:
    """Copy a zeroseg LSeg model's image encoder into the ZSI backbone (same timm network).

    ``source``: "default" (the bundled model) or a zeroseg LSeg .safetensors. Returns the number
    of tensors copied; a backbone that does not match is a clear error.
    """


    path = bundled_weights_path(source) if source == "default" else source
    if path is None or not Path(path).is_file():
        raise ZerosegError(f"backbone_init: model file not found: {source}")
    try:
        read_model_file(path, SAFETENSORS_FORMAT, "LSeg model")
    except ZerosegError as e:
        raise ZerosegError(f"backbone_init: {e}") from None
    weights = read_safetensors(path, prefix="model.image_encoder.")
    body = model.backbone.body
    own = body.state_dict()
    if set(weights) != set(own) or any(weights[k].shape != own[k].shape for k in own):
        raise ZerosegError(f"backbone_init: {source}'s image encoder does not match backbone "
                           f"{model.config.backbone!r}")
    body.load_state_dict(weights)
    return len(weights)


def train_instances(cfg: dict, resume: str | None = None, progress: bool = True) -> dict:
    """Train (or continue training) a ZSI model as ``cfg`` says; returns the run's summary."""
    return InstanceTrainer(cfg, resume=resume, progress=progress).run()
