"""Named model configurations (data in configs.json) and the models bundled with the package."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import ZerosegError
from .lseg import LSegConfig, LSegNet
from .pretrained import load_backbone_weights

# Official LSeg backbone names -> zeroseg configuration names.
OFFICIAL_BACKBONES = {
    "clip_vitl16_384": "lseg_vitl16_384",
    "clip_vitb32_384": "lseg_vitb32_384",
    "clipRN50x16_vitl16_384": "lseg_rn50x16_vitl16_384",
    "clip_resnet101": "lseg_zs_resnet101",
}

# Weights that ship inside the package (zeroseg/weights/<file>): name -> (file, model family).
BUNDLED_WEIGHTS = {"default": ("default.safetensors", "lseg"),
                   "default-instances": ("default_instances.safetensors", "zsi")}
FAMILIES = ("lseg", "zsi")


@cache
def _configs() -> dict[str, dict]:
    text = resources.files("zeroseg.models").joinpath("configs.json").read_text()
    return json.loads(text)


def _zsi_names() -> list[str]:
    from .zsi.model import _configs as zsi_configs  # heavy: torchvision's detection models

    return sorted(zsi_configs())


def list_models(family: str | None = None) -> list[str]:
    """Registered architectures (configs as data), LSeg's and ZSI's, or one ``family``'s.
    Weights are listed apart: ``list_weights``."""
    names = {"lseg": sorted(_configs()), "zsi": _zsi_names()}
    return [n for f in FAMILIES if family in (None, f) for n in names[f]]


def list_weights(family: str | None = None) -> list[str]:
    """Names of the weights bundled with the package (``load_model`` / ``load_instance_model`` take them)."""
    return sorted(n for n, (_, f) in BUNDLED_WEIGHTS.items() if family in (None, f))


def model_family(name: str) -> str | None:
    """"lseg" or "zsi" for a registered architecture or bundled weights name; None otherwise."""
    if name in BUNDLED_WEIGHTS:
        return BUNDLED_WEIGHTS[name][1]
    if name in _configs():
        return "lseg"
    return "zsi" if name in _zsi_names() else None


def get_config(name: str, **overrides) -> LSegConfig:
    if name not in _configs():
        raise ZerosegError(f"unknown model configuration {name!r}; known: {', '.join(sorted(_configs()))}")
    return LSegConfig.from_dict({**_configs()[name], **overrides})


def create_model(name_or_config, pretrained_backbone: str | None = None, **overrides):
    """Any registered network, LSeg (``LSegNet``) or ZSI (``ZSIModel``), from its name or a config
    (``LSegConfig`` / ``ZSIConfig``, or a dict: one with ``fpn_channels`` is a ZSI config), with
    ``overrides`` applied either way.

    Randomly initialised except, with ``pretrained_backbone`` (a tag such as ``imagenet`` or a
    local weights file, see ``zeroseg.models.pretrained``), the image encoder / detector backbone.
    """

    if isinstance(name_or_config, str) and model_family(name_or_config) is None:
        raise ZerosegError(f"unknown model configuration {name_or_config!r}; known: {', '.join(list_models())}")
    from .zsi.model import ZSIConfig, create_zsi_model  # heavy: torchvision's detection models

    is_zsi = isinstance(name_or_config, ZSIConfig) or \
        (isinstance(name_or_config, str) and model_family(name_or_config) == "zsi" and name_or_config not in BUNDLED_WEIGHTS) or \
        (isinstance(name_or_config, dict) and "fpn_channels" in name_or_config)
    if is_zsi:
        if pretrained_backbone:
            overrides["backbone_file"] = pretrained_backbone
        return create_zsi_model(name_or_config, **overrides)
    if isinstance(name_or_config, str):
        cfg = get_config(name_or_config, **overrides)
    elif isinstance(name_or_config, dict):
        cfg = LSegConfig.from_dict({**name_or_config, **overrides})
    else:
        cfg = LSegConfig.from_dict({**name_or_config.to_dict(), **overrides})
    model = LSegNet(cfg)
    if pretrained_backbone:
        if cfg.encoder != "timm":
            raise ZerosegError(f"pretrained_backbone needs a timm convnet encoder; {cfg.backbone!r} is {cfg.encoder!r}")
        load_backbone_weights(model.image_encoder, cfg.backbone, pretrained_backbone)
    return model


def bundled_weights_path(name: str, family: str | None = None) -> Path | None:
    """The bundled file of ``name`` (of ``family`` if given), or None."""
    if name not in BUNDLED_WEIGHTS or family not in (None, BUNDLED_WEIGHTS[name][1]):
        return None
    return Path(str(resources.files("zeroseg.weights").joinpath(BUNDLED_WEIGHTS[name][0])))
