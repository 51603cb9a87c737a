"""Optimization helpers shared by the trainers: learning-rate schedule, parameter groups,
BatchNorm freezing, and which parameters a loss never reaches (for DDP)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["lr_factor", "param_groups", "set_bn_eval", "freeze_unused_parameters", "model_outputs"]


def lr_factor(step: int, total: int, cfg: dict) -> float:
    """Poly decay (1 - step/total)^power times a linear warmup over ``warmup_iters`` steps."""
    f = 1.0
    if cfg["lr_schedule"] == "poly":
        f = (1.0 - min(step, total) / max(total, 1)) ** float(cfg["poly_power"])
    w = int(cfg["warmup_iters"])
    if w > 0 and step < w:
        f *= (step + 1) / w
    return f


def param_groups(model: nn.Module, cfg: dict, backbone_prefix: str = "image_encoder.") -> list[dict]:
    """(image encoder | rest) x (decay | no decay: biases and norm weights, i.e. 1-D tensors)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith(backbone_prefix), p.ndim > 1), []).append(p)
    out = []
    for (backbone, decay), params in sorted(groups.items()):
        lr = float(cfg["lr"]) * (float(cfg["backbone_lr_mult"]) if backbone else 1.0)
        out.append({"params": params, "lr": lr, "base_lr": lr,
                    "weight_decay": float(cfg["weight_decay"]) if decay else 0.0})
    return out


def set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def freeze_unused_parameters(model: nn.Module, text: torch.Tensor, stride: int, with_edges: bool = False) -> list[str]:
    """Stop training parameters the forward pass never uses (e.g. DPT's deepest lateral unit,
    a ViT's classifier head), found by one backward pass in eval mode (no buffer updates, no
    RNG). DDP would otherwise fail on them, and find_unused_parameters costs every step."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = torch.zeros(1, 3, 2 * stride, 2 * stride, device=text.device)
            sum(o.float().sum() for o in model_outputs(model, x, text, with_edges).values()).backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    return unused


def model_outputs(model: nn.Module, x: torch.Tensor, text: torch.Tensor, with_edges: bool) -> dict:
    """What ``losses.compute_loss`` needs: logits, and boundary logits when the edge loss is on."""
    if not with_edges:
        return {"logits": model(x, text)}
    logits, edges = model(x, text, with_edges=True)
    return {"logits": logits, "edge_logits": edges}
