"""Named model configurations (data in configs.json) and the models bundled with the package."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from .lseg import LSegConfig, LSegNet

# Official LSeg backbone names -> zeroseg configuration names.
OFFICIAL_BACKBONES = {
    "clip_vitl16_384": "lseg_vitl16_384",
    "clip_vitb32_384": "lseg_vitb32_384",
    "clipRN50x16_vitl16_384": "lseg_rn50x16_vitl16_384",
    "clip_resnet101": "lseg_zs_resnet101",
}

# Names whose weights ship inside the package (zeroseg/weights/<file>).
BUNDLED_WEIGHTS = {"default": "default.safetensors"}


@cache
def _configs() -> dict[str, dict]:
    text = resources.files("zeroseg.models").joinpath("configs.json").read_text()
    return json.loads(text)


def list_models() -> list[str]:
    return sorted(_configs()) + sorted(BUNDLED_WEIGHTS)


def get_config(name: str, **overrides) -> LSegConfig:
    from ..errors import ZerosegError

    if name not in _configs():
        raise ZerosegError(f"unknown model configuration {name!r}; known: {', '.join(sorted(_configs()))}")
    return LSegConfig.from_dict({**_configs()[name], **overrides})


def create_model(name_or_config: str | LSegConfig | dict, pretrained_backbone: str | None = None,
                 **overrides) -> LSegNet:
    """An LSeg network from a registered name or a config, with ``overrides`` applied either way.

    The network is randomly initialised except, with ``pretrained_backbone`` (a tag such as
    ``imagenet`` or a local weights file, see ``zeroseg.models.pretrained``), its image encoder.
    """
    if isinstance(name_or_config, str):
        cfg = get_config(name_or_config, **overrides)
    elif isinstance(name_or_config, dict):
        cfg = LSegConfig.from_dict({**name_or_config, **overrides})
    else:
        cfg = LSegConfig.from_dict({**name_or_config.to_dict(), **overrides})
    model = LSegNet(cfg)
    if pretrained_backbone:
        from ..errors import ZerosegError
        from .pretrained import load_backbone_weights

        if cfg.encoder != "timm":
            raise ZerosegError(f"pretrained_backbone needs a timm convnet encoder; {cfg.backbone!r} is {cfg.encoder!r}")
        load_backbone_weights(model.image_encoder, cfg.backbone, pretrained_backbone)
    return model


def bundled_weights_path(name: str) -> Path | None:
    if name not in BUNDLED_WEIGHTS:
        return None
    return Path(str(resources.files("zeroseg.weights").joinpath(BUNDLED_WEIGHTS[name])))
