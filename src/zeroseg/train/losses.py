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


EDGE_RADIUS = 2  # ground-truth boundaries are dilated to this many pixels (SAZS)


def boundary_targets(target: torch.Tensor, radius: int = EDGE_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-map edges dilated to ``radius`` pixels, and where they are defined.

    A pixel is a boundary pixel when its (2r+1)^2 neighbourhood holds more than one label.
    Pixels with an ignored label in their neighbourhood carry no target (``valid`` False), so
    padding and unlabelled areas never invent boundaries.
    """
    t = target.unsqueeze(1).float()
    ignored = (target == IGNORE_INDEX).unsqueeze(1).float()
    k = 2 * radius + 1
    highest = F.max_pool2d(t, k, stride=1, padding=radius)
    lowest = -F.max_pool2d(-t, k, stride=1, padding=radius)
    near_ignored = F.max_pool2d(ignored, k, stride=1, padding=radius) > 0
    return (highest != lowest)[:, 0], ~near_ignored[:, 0]


def balanced_bce(edge_logits: torch.Tensor, edges: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy (HED): boundary pixels weighted by the share of
    non-boundary pixels and vice versa, averaged over valid pixels."""
    logits = edge_logits.float().reshape(edges.shape)
    n_valid = valid.sum()
    if n_valid == 0:
        return logits.sum() * 0.0
    n_pos = (edges & valid).sum()
    beta = (n_valid - n_pos).float() / n_valid  # weight of a boundary pixel
    weight = torch.where(edges, beta, 1 - beta) * valid
    loss = F.binary_cross_entropy_with_logits(logits, edges.float(), weight=weight, reduction="sum")
    return loss / n_valid


def edge_loss(outputs: dict, batch: dict, cfg: dict) -> torch.Tensor:
    """SAZS's boundary term: the edge head against dilated ground-truth boundaries."""
    edges, valid = boundary_targets(batch["target"])
    return balanced_bce(outputs["edge_logits"], edges, valid)


def check_loss_config(cfg: dict) -> None:
    """Fail before training starts, not at the first step."""
    if float(cfg.get("edge_loss_weight") or 0.0) < 0:
        raise ZerosegError("edge_loss_weight must be >= 0")


def compute_loss(outputs: dict, batch: dict, cfg: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``outputs``: {"logits": [B,C,H,W], "edge_logits": [B,1,H,W] with the edge loss};
    ``batch``: {"image", "target": [B,H,W], ...}.

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
