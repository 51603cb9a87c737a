"""Loading and saving weights: official LSeg ``.ckpt`` files and zeroseg ``.safetensors`` files.

Official checkpoints are read with ``torch.load(weights_only=True)``; their key names are
translated to zeroseg's module names by the table ``OFFICIAL_KEY_RULES`` (data, not code
paths). The network is built on the ``meta`` device and takes the checkpoint's tensors
directly, so loading a 1.5 GB checkpoint neither initialises random weights nor holds two
copies.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import ZerosegError
from ..text import create_text_encoder
from . import weight_io
from .lseg import LSegConfig, LSegNet
from .registry import OFFICIAL_BACKBONES, get_config

SAFETENSORS_FORMAT = "zeroseg/lseg-1"


def _level(prefix: str, suffix: str):
    return lambda m: f"{prefix}.{int(m[1]) - 1}.{suffix}"


# (pattern on the official key without "net.", replacement) - first match wins.
OFFICIAL_KEY_RULES: list[tuple[str, object]] = [
    (r"^pretrained\.model\.", "image_encoder.backbone."),
    (r"^pretrained\.act_postprocess(\d)\.0\.project\.0\.", _level("image_encoder.reassemble", "readout.proj.0.")),
    (r"^pretrained\.act_postprocess(\d)\.3\.", _level("image_encoder.reassemble", "conv.")),
    (r"^pretrained\.act_postprocess(\d)\.4\.", _level("image_encoder.reassemble", "resample.")),
    (r"^pretrained\.layer1\.0\.", "image_encoder.backbone.conv1."),  # ResNet stem: conv1, bn1, relu, maxpool, layer1
    (r"^pretrained\.layer1\.1\.", "image_encoder.backbone.bn1."),
    (r"^pretrained\.layer1\.4\.", "image_encoder.backbone.layer1."),
    (r"^pretrained\.layer([234])\.", r"image_encoder.backbone.layer\1."),
    (r"^scratch\.layer(\d)_rn\.", _level("decoder.lateral", "")),
    (r"^scratch\.refinenet(\d)\.resConfUnit1\.", _level("decoder.fusion", "lateral_unit.")),
    (r"^scratch\.refinenet(\d)\.resConfUnit2\.", _level("decoder.fusion", "merged_unit.")),
    (r"^scratch\.refinenet(\d)\.out_conv\.", _level("decoder.fusion", "out_conv.")),
    (r"^scratch\.head1\.", "head."),
    (r"^scratch\.head_block\.depthwise\.depthwise\.", "spatial_reg.block.conv."),
    (r"^clip_pretrained\.(?!visual\.|logit_scale$)", "text."),
]
# Official keys LSeg never uses: CLIP's image tower and CLIP's own temperature.
OFFICIAL_UNUSED = re.compile(r"^clip_pretrained\.(visual\.|logit_scale$)")


def translate_official_keys(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str], list[str]]:
    """Official state_dict (with or without ``net.``) -> (model sd, text sd, unused keys, unknown keys)."""
    model_sd, text_sd, unused, unknown = {}, {}, [], []
    for key, value in sd.items():
        k = key[4:] if key.startswith("net.") else key
        if OFFICIAL_UNUSED.match(k):
            unused.append(key)
            continue
        for pattern, repl in OFFICIAL_KEY_RULES:
            new, n = re.subn(pattern, repl, k, count=1)
            if n:
                if new.startswith("text."):
                    text_sd[new[5:]] = value
                else:
                    model_sd[new] = value
                break
        else:
            unknown.append(key)
    return model_sd, text_sd, unused, unknown


def infer_official_backbone(sd: dict[str, torch.Tensor]) -> str:
    """The official ``backbone`` name, from key names and shapes."""
    def get(k):
        return sd.get("net." + k, sd.get(k))

    text_proj = get("clip_pretrained.text_projection")
    if text_proj is None:
        raise ZerosegError("not an LSeg checkpoint: it has no CLIP text tower (net.clip_pretrained.*)")
    if get("pretrained.layer1.0.weight") is not None:
        return "clip_resnet101"
    patch = get("pretrained.model.patch_embed.proj.weight")
    if patch is None:
        raise ZerosegError("not an LSeg checkpoint: no image encoder weights (net.pretrained.*)")
    width, p = patch.shape[0], patch.shape[-1]
    if p == 32 and width == 768:
        return "clip_vitb32_384"
    if p == 16 and width == 1024:
        return "clipRN50x16_vitl16_384" if text_proj.shape[1] == 768 else "clip_vitl16_384"
    raise ZerosegError(f"unsupported LSeg image encoder: patch {p}, width {width}")


def read_torch_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a PyTorch(-Lightning) checkpoint, loaded safely (``weight_io``)."""
    return weight_io.read_torch_state_dict(path, "checkpoint")


def assign_weights(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Strictly load ``sd`` into ``module`` (built on meta), naming any mismatch in one line."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} with wrong shape (e.g. {'; '.join(wrong[:2])})")
    if problems:
        raise ZerosegError(f"{what} does not match: " + "; ".join(problems))
    module.load_state_dict(sd, strict=True, assign=True)


def _build_on_meta(cfg: LSegConfig) -> LSegNet:
    with torch.device("meta"):
        return LSegNet(cfg)


def _finish(module: nn.Module) -> nn.Module:
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise ZerosegError(f"weights missing for {', '.join(leftover[:3])}")
    return module.float().eval()


def _text_encoder_from_weights(text_sd: dict[str, torch.Tensor], name: str):
    from ..text.clip import (  # optional: open_clip
        ClipTextEncoder,
        build_text_tower,
        tower_config_from_state_dict,
    )

    try:
        tower_cfg = tower_config_from_state_dict(text_sd)
    except KeyError as e:
        raise ZerosegError(f"CLIP text tower incomplete: no {e.args[0]}") from None
    tower = build_text_tower(tower_cfg)
    assign_weights(tower, text_sd, "CLIP text tower")
    return ClipTextEncoder(_finish(tower), tower_cfg["output_dim"], name=name)


def model_from_official_state_dict(sd: dict[str, torch.Tensor], arch_option: int = 0, block_depth: int = 0,
                                   activation: str = "lrelu"):
    """(LSegNet, CLIP text encoder, config) computing what the official ``LSegNet`` computes."""
    backbone = infer_official_backbone(sd)
    model_sd, text_sd, _unused, unknown = translate_official_keys(sd)
    if unknown:
        raise ZerosegError(f"unexpected keys in LSeg checkpoint ({len(unknown)}, e.g. {', '.join(unknown[:3])})")
    has_block = "spatial_reg.block.conv.weight" in model_sd
    if has_block and arch_option == 0:
        raise ZerosegError("checkpoint has spatial regularization weights: pass arch_option=1 (bottleneck) "
                           "or 2 (depthwise) and its block_depth")
    if not has_block and arch_option != 0:
        raise ZerosegError(f"arch_option={arch_option} needs spatial regularization weights, "
                           "which this checkpoint lacks (all released LSeg checkpoints use arch_option=0)")
    cfg = get_config(OFFICIAL_BACKBONES[backbone], arch_option=arch_option, block_depth=block_depth,
                     activation=activation)
    model = _build_on_meta(cfg)
    assign_weights(model, model_sd, f"LSeg checkpoint ({backbone})")
    text = _text_encoder_from_weights(text_sd, cfg.text_encoder)
    return _finish(model), text, cfg


def load_official_checkpoint(path: str | Path, arch_option: int = 0, block_depth: int = 0):
    return model_from_official_state_dict(read_torch_checkpoint(path), arch_option, block_depth)


def save_safetensors(path: str | Path, model: LSegNet, text_encoder=None, extra: dict | None = None) -> None:
    """Weights (``model.*`` and, for CLIP towers carried along, ``text.*``) + JSON config as metadata."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tower = getattr(text_encoder, "tower", None)
    if tower is not None:
        tensors.update({f"text.{k}": v for k, v in tower.state_dict().items()})
    meta = {"format": SAFETENSORS_FORMAT, "config": json.dumps(model.config.to_dict())}
    if extra:
        meta["extra"] = json.dumps(extra)
    weight_io.write_safetensors(path, tensors, meta)


read_safetensors_metadata = weight_io.read_safetensors_metadata


def load_safetensors_model(path: str | Path, with_text: bool = True):
    """(LSegNet, text encoder, config) from a zeroseg ``.safetensors`` file.

    ``with_text=False`` skips building the text encoder (its slot is None), for callers that
    bring their own, such as training from ``init_from``.
    """
    path = Path(path)
    config, meta = weight_io.read_model_file(path, SAFETENSORS_FORMAT)
    try:
        cfg = LSegConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise ZerosegError(f"{path}: bad model config: {e}") from None
    tensors = weight_io.read_safetensors(path)
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    text_sd = {k[5:]: v for k, v in tensors.items() if k.startswith("text.")}
    try:
        model = _build_on_meta(cfg)
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError) as e:  # e.g. an unknown timm backbone
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ZerosegError(f"{path}: its config does not describe a buildable model "
                           f"(encoder {cfg.encoder!r}, backbone {cfg.backbone!r}): {reason}") from None
    assign_weights(model, model_sd, f"model file {path.name}")
    if not with_text:
        text = None
    elif text_sd:
        text = _text_encoder_from_weights(text_sd, cfg.text_encoder)
    else:
        extra = weight_io.metadata_json(meta, "extra", path, {})
        text = create_text_encoder(text_encoder_spec(cfg.text_encoder, extra), cache=False)
    return _finish(model), text, cfg


def text_encoder_spec(config_spec: str, extra: dict | None) -> str:
    """The text encoder a model file is used with, for LSeg and ZSI alike: the one named in its
    config, unless it was trained with the test-only ``random:D`` encoder (``extra``'s
    ``train_text_encoder``), whose vectors its weights were fitted to."""
    trained = str((extra or {}).get("train_text_encoder") or "")
    return trained if trained.startswith("random:") else config_spec


def model_extra(path: str | Path) -> dict:
    """The ``extra`` metadata of a zeroseg .safetensors (training facts, calibration); {} if none."""
    extra = weight_io.metadata_json(read_safetensors_metadata(path), "extra", path, {})
    return extra if isinstance(extra, dict) else {}


def write_model_extra(src: str | Path, dst: str | Path, update: dict) -> None:
    """Copy a zeroseg .safetensors (semantic or instance) to ``dst`` with ``update`` merged into
    its ``extra`` metadata."""
    from .zsi.model import SAFETENSORS_FORMAT as ZSI_FORMAT  # heavy: torchvision detection, only for this

    meta = read_safetensors_metadata(src)
    if meta.get("format") not in (SAFETENSORS_FORMAT, ZSI_FORMAT):
        raise ZerosegError(f"{src} is not a zeroseg model (no '{SAFETENSORS_FORMAT}' or '{ZSI_FORMAT}' metadata)")
    meta["extra"] = json.dumps({**model_extra(src), **update})
    weight_io.write_safetensors(dst, weight_io.read_safetensors(src), meta)
