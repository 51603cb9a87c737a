"""Training LSeg on seen classes (``LSegTrainer``: the semantic task of ``trainer.Trainer``).

The text encoder is frozen: the label set ``["other"] + seen`` is embedded once and every
training image is scored against all of it, as in the LSeg paper. Model selection uses the
seen-class mIoU of the val split; unseen classes never reach this module.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ZerosegError
from ..eval.metrics import iou_from_confusion, mean_iou
from ..labels import IGNORE_INDEX
from ..models.loading import load_safetensors_model, save_safetensors
from ..models.registry import create_model
from . import losses
from .config import load_config, resolve_config, validate_config  # noqa: F401  (the training API)
from .data import (
    VOCABULARY_ID0,
    AugmentConfig,
    JoinedDataset,
    SeenSegmentationDataset,
    VocabularySceneDataset,
    pad_collate,
)
from .optim import freeze_unused_parameters, lr_factor, model_outputs  # noqa: F401
from .state import read_state  # noqa: F401
from .trainer import Trainer, make_text_encoder  # noqa: F401

__all__ = ["LSegTrainer", "train", "seen_miou", "load_config", "resolve_config", "read_state", "lr_factor"]


def seen_miou(conf: torch.Tensor) -> float:
    """Mean IoU over seen classes (label-set positions 1..C-1), skipping classes absent from
    both prediction and ground truth; NaN if none is present."""
    return mean_iou(iou_from_confusion(conf.cpu().numpy()), range(1, conf.shape[0]))


class LSegTrainer(Trainer):
    """Semantic segmentation: LSeg scored against the frozen embeddings of ``["other"] + seen``."""

    def setup_task(self) -> None:
        """Model, frozen label embeddings, ``train_ds`` and ``val_loader`` (LSeg semantic segmentation)."""
        cfg, d = self.cfg, self.dist
        seed = int(cfg["seed"])
        self.with_edges = float(cfg["edge_loss_weight"] or 0.0) > 0
        self.module = self.build_model()
        self.text = self.embed_labels(self.labels)

        stride = self.module.stride
        if cfg["crop_size"] % stride:
            raise ZerosegError(f"crop_size {cfg['crop_size']} is not a multiple of the model stride {stride}")
        mean, std = self.module.config.mean, self.module.config.std
        aug = AugmentConfig(cfg["crop_size"], float(cfg["scale_min"]), float(cfg["scale_max"]),
                            bool(cfg["hflip"]), float(cfg["color_jitter"]), float(cfg["style_augment"]))
        self.train_ds = SeenSegmentationDataset(self.index, "train", mean, std, train=True, augment=aug, seed=seed,
                                                held_out=self.held_out)
        self.vocabulary: list[str] = []  # names of the extra training vocabulary, if any
        self.vocabulary_text = None
        if cfg["vocabulary_images"]:
            self._add_vocabulary(mean, std, aug)
        val_ds = SeenSegmentationDataset(self.index, "val", mean, std, train=False,
                                         eval_size=cfg["val_size"] or cfg["crop_size"], held_out=self.held_out)
        workers = int(cfg["num_workers"])
        pin = d.device.type == "cuda"
        shard = torch.utils.data.Subset(val_ds, list(range(d.rank, len(val_ds), d.world)))
        self.val_loader = DataLoader(shard, batch_size=int(cfg["batch_size"]) // d.world, shuffle=False,
                                     num_workers=workers, pin_memory=pin,
                                     collate_fn=functools.partial(pad_collate, multiple=stride),
                                     generator=torch.Generator().manual_seed(seed))

    def _add_vocabulary(self, mean, std, aug: AugmentConfig) -> None:
        """Extra scenes of OpenMoji names outside the benchmark, so that the pixel embeddings learn
        to meet many more names than the seen classes. Names sharing a word with an unseen or a
        held-out class are never among them (``vocabulary_names``)."""
        from ..data.synth import vocabulary_names  # heavy

        classes = set(self.index.classes)
        vocabulary = {n: c for n, c in vocabulary_names([*self.unseen, *self.held_out]).items() if n not in classes}
        self.vocabulary = list(vocabulary)
        self.vocabulary_text = self.text_encoder.encode(self.vocabulary).float().to(self.dist.device)
        extra = VocabularySceneDataset(list(vocabulary.values()), int(self.cfg["vocabulary_images"]), mean, std,
                                       aug, seed=int(self.cfg["seed"]), size=int(self.index.meta.get("image_size") or 256))
        self.train_ds = JoinedDataset([self.train_ds, extra])

    def batch_label_set(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label embeddings a batch with vocabulary scenes is scored against, and its targets
        in their positions: the training label set, then the vocabulary names present in the batch
        and ``vocabulary_negatives`` more drawn by the step (the same in every process and on resume)."""
        k, v = len(self.labels), self.vocabulary_text.shape[0]
        present = torch.unique(target[target >= VOCABULARY_ID0]) - VOCABULARY_ID0
        g = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1_000_003 + self.global_step)
        negatives = torch.randperm(v, generator=g)[:int(self.cfg["vocabulary_negatives"])].to(target.device)
        chosen = torch.unique(torch.cat([present, negatives]))
        lookup = torch.full((VOCABULARY_ID0 + v,), IGNORE_INDEX, dtype=torch.int64, device=target.device)
        lookup[:k] = torch.arange(k, device=target.device)
        lookup[VOCABULARY_ID0 + chosen] = k + torch.arange(len(chosen), device=target.device)
        return torch.cat([self.text, self.vocabulary_text[chosen]]), lookup[target]

    def after_to_device(self) -> None:
        self.unused_parameters = freeze_unused_parameters(self.module, self.text, self.module.stride,
                                                          self.with_edges)

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        if cfg["init_from"]:
            model, _text, _ = load_safetensors_model(cfg["init_from"], with_text=False)
            if self.with_edges:
                model.add_edge_head()
            return model.train()
        overrides = dict(cfg["model_overrides"] or {})
        if self.with_edges:
            overrides["edge_head"] = True
        try:
            return create_model(cfg["model"], pretrained_backbone=cfg["pretrained_backbone"], **overrides).train()
        except (ValueError, TypeError) as e:
            raise ZerosegError(f"cannot build model {cfg['model']!r}: {e}") from None

    def save_model(self, path: Path, completed_epochs: int, val: float) -> None:
        extra = {"epoch": completed_epochs, "global_step": self.global_step,
                 "val_seen_miou": None if math.isnan(val) else val, "labels": self.labels,
                 "seen": self.seen, "unseen": self.unseen, "dataset": str(self.cfg["data"]),
                 "calibration_classes": list(self.held_out),
                 "vocabulary": list(self.vocabulary),
                 "train_text_encoder": self.trained_text_encoder()}
        save_safetensors(path, self.module, text_encoder=self.text_encoder, extra=extra)

    @torch.no_grad()
    def validate(self) -> float:
        """Seen-class mIoU on the val split (sharded over processes, confusion summed)."""
        c = len(self.labels)
        conf = torch.zeros(c, c, dtype=torch.int64, device=self.dist.device)
        self.module.eval()
        try:
            for batch in self.val_loader:
                x = batch["image"].to(self.dist.device, non_blocking=True)
                y = batch["target"].to(self.dist.device, non_blocking=True)
                with self._autocast():
                    pred = self.module(x, self.text).argmax(1)
                valid = y != IGNORE_INDEX
                conf += torch.bincount(y[valid] * c + pred[valid], minlength=c * c).view(c, c)
        finally:
            self._train_mode()
        return seen_miou(self.dist.all_reduce_sum(conf).cpu())

    def train_step(self, batch: dict) -> torch.Tensor:
        d = self.dist
        lr = self._set_lr()
        x = batch["image"].to(d.device, non_blocking=True)
        target = batch["target"].to(d.device, non_blocking=True)
        text = self.text
        if self.vocabulary_text is not None:
            text, target = self.batch_label_set(target)
        with self._autocast():
            outputs = model_outputs(self.model, x, text, self.with_edges)
        loss, _parts = losses.compute_loss(outputs, {**batch, "image": x, "target": target}, self.cfg)
        self._optimize(loss)
        self.lr = lr
        return loss.detach()


def train(cfg: dict, resume: str | None = None, progress: bool = True) -> dict:
    """Train (or continue training) as ``cfg`` says; returns a summary (see ``Trainer._run``)."""
    return LSegTrainer(cfg, resume=resume, progress=progress).run()
