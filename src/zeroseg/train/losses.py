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


def text_neighbours(text: torch.Tensor, k: int, temperature: float, background: int | None = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """For every label, its ``k`` nearest other labels by text cosine and their weights, a softmax
    of the cosines at ``temperature``: ([C, k] indices, [C, k] weights). The background label
    (index ``background``) is nobody's neighbour: "other" is no kind of object."""
    t = F.normalize(text.float(), dim=-1)
    cos = t @ t.T
    cos.fill_diagonal_(float("-inf"))
    if background is not None:
        cos[:, background] = float("-inf")
    k = min(int(k), cos.shape[1] - 1 - (background is not None))
    values, index = cos.topk(k, dim=1)
    return index, (values / temperature).softmax(dim=1)


def text_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, text: torch.Tensor, epsilon: float,
                       k: int = 5, temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy against soft targets that follow the text space: an object pixel of label y
    puts ``1 - epsilon`` on y and ``epsilon`` on y's ``k`` nearest labels by text cosine
    (``text_neighbours``); background pixels (label 0) keep their one-hot target. Training thus
    pulls a pixel's embedding towards the names near its own, the geometry a new name is judged
    by (semantic label smoothing). Mean over non-ignored pixels."""
    logits = logits.float()
    valid = target != IGNORE_INDEX
    if not valid.any():
        return logits.sum() * 0.0
    logp = logits.log_softmax(dim=1)
    y = torch.where(valid, target, torch.zeros_like(target))
    own = -logp.gather(1, y[:, None])[:, 0]
    index, weight = text_neighbours(text, k, temperature)
    near = -(logp.gather(1, index[y].permute(0, 3, 1, 2)) * weight[y].permute(0, 3, 1, 2)).sum(1)
    smooth = torch.where(y > 0, (1 - epsilon) * own + epsilon * near, own)
    return smooth[valid].mean()


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
    if not 0 <= float(cfg.get("text_smoothing") or 0.0) < 1:
        raise ZerosegError("text_smoothing must be >= 0 and < 1")
    if float(cfg.get("text_smoothing") or 0.0) > 0 and (
            int(cfg.get("text_smoothing_neighbours") or 0) < 1 or float(cfg.get("text_smoothing_temperature") or 0) <= 0):
        raise ZerosegError("text_smoothing needs text_smoothing_neighbours >= 1 and text_smoothing_temperature > 0")


def compute_loss(outputs: dict, batch: dict, cfg: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``outputs``: {"logits": [B,C,H,W], "edge_logits": [B,1,H,W] with the edge loss};
    ``batch``: {"image", "target": [B,H,W], "text": [C,D] the label set's embeddings, ...}.

    Returns the total loss (to backpropagate) and its detached parts (to log).
    """
    epsilon = float(cfg.get("text_smoothing") or 0.0)
    if epsilon > 0:
        seg = text_smoothed_loss(outputs["logits"], batch["target"], batch["text"], epsilon,
                                 int(cfg["text_smoothing_neighbours"]), float(cfg["text_smoothing_temperature"]))
    else:
        seg = segmentation_loss(outputs["logits"], batch["target"])
    total = seg
    parts = {"seg": seg.detach()}
    w = float(cfg.get("edge_loss_weight") or 0.0)
    if w > 0:
        edge = edge_loss(outputs, batch, cfg)
        total = total + w * edge
        parts["edge"] = edge.detach()
    return total, parts
