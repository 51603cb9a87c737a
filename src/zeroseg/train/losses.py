"""Training losses. ``compute_loss`` is the single place the engine asks for the objective.

To add a term (e.g. the planned edge loss): compute it in ``compute_loss`` from ``outputs``
(what the model produced) and ``batch`` (what the loader produced), weight it by its config
key, add it to ``parts`` for logging, and accept the key in ``check_loss_config``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ZerosegError
from .data import IGNORE_INDEX


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy over the label set, mean over non-ignored pixels."""
    logits = logits.float()  # the loss in fp32 even under autocast
    if not (target != IGNORE_INDEX).any():  # CE's mean over zero pixels would be NaN
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def edge_loss(outputs: dict, batch: dict, cfg: dict) -> torch.Tensor:
    """Placeholder for the boundary-aware term another engineer is adding."""
    raise ZerosegError("edge_loss_weight > 0 but no edge loss is implemented yet")


def check_loss_config(cfg: dict) -> None:
    """Fail before training starts, not at the first step."""
    if float(cfg.get("edge_loss_weight") or 0.0) < 0:
        raise ZerosegError("edge_loss_weight must be >= 0")
    if float(cfg.get("edge_loss_weight") or 0.0) > 0:
        edge_loss({}, {}, cfg)


def compute_loss(outputs: dict, batch: dict, cfg: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``outputs``: {"logits": [B,C,H,W]}; ``batch``: {"image", "target": [B,H,W], ...}.

    Returns the total loss (to backpropagate) and its detached parts (to log).
    """
    seg = segmentation_loss(outputs["logits"], batch["target"])
    total = seg
    parts = {"seg": seg.detach()}
    w = float(cfg.get("edge_loss_weight") or 0.0)
    if w > 0:
        edge = edge_loss(outputs, batch, cfg)
        total = total + w * edge
        parts["edge"] = edge.detach()
    return total, parts
