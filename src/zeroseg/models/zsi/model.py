"""ZSI (Zheng et al., CVPR 2021) on torchvision's Mask R-CNN parts.

    image -> transform -> backbone + FPN -> RPN (BA-RPN or plain) -> RoI heads whose box and mask
    predictors score against class embeddings [background, label_1 .. label_C]

*Synchronized background*: with ``ba_rpn`` the background row of the class embeddings is the
BA-RPN's learned background vector V_b, re-read on every forward pass (training and inference).
The heads use it as a constant (detached): V_b is learned by the RPN's objectness loss only, and
the heads follow it. Without ``ba_rpn`` (the ablation baseline, as in the paper) the background
row is the text embedding of the word "background", fixed.

Every part is a torchvision detection component or a drop-in replacement with the same
interface (``BackgroundAwareRPNHead`` for ``RPNHead``, ``ZSIRoIHeads`` for ``RoIHeads``).
"""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...errors import ZerosegError
from ..encoders import TimmConvEncoder
from ..weight_io import metadata_json, read_model_file, read_safetensors, write_safetensors
from .heads import SemanticBoxPredictor, SemanticMaskPredictor
from .roi_heads import BoxScoreRelay, ZSIRoIHeads
from .rpn import BackgroundAwareRPNHead

SAFETENSORS_FORMAT = "zeroseg/zsi-1"
FEATURE_NAMES = ["0", "1", "2", "3"]


@dataclass
class ZSIConfig:
    """Everything needed to rebuild a ZSI network (saved as JSON beside its weights)."""

    backbone: str = "resnet50"              # a timm convnet with feature levels at strides 4..32
    backbone_file: str | None = None        # backbone weights: a local file or a pretrained tag ("imagenet")
    fpn_channels: int = 256
    representation_size: int = 1024         # box head (two FC layers)
    mask_layers: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    embed_dim: int = 384                    # the text encoder's dimension
    text_encoder: str = "minilm"
    ba_rpn: bool = True                     # BA-RPN + synchronized background (False: plain RPN, word "background")
    reconstruction_weight: float = 1.0      # weight of each head's L_R
    min_size: int = 800                     # GeneralizedRCNNTransform resize
    max_size: int = 1333
    train_min_sizes: list[int] | None = None  # multi-scale training: one of these per batch
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_pre_nms_top_n: list[int] = field(default_factory=lambda: [2000, 1000])   # train, test
    rpn_post_nms_top_n: list[int] = field(default_factory=lambda: [2000, 1000])
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.001         # candidate threshold where a call names none (forward's score_thresh)
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZSIConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ZSI config field(s): {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FPNBackbone(nn.Module):
    """A timm convnet's four feature levels -> FPN maps '0'..'3' (+ 'pool'), ``out_channels`` wide."""

    def __init__(self, name: str, out_channels: int, pretrained_file: str | None = None):
        super().__init__()

        self.body = TimmConvEncoder(name, pretrained=pretrained_file)
        self.fpn = FeaturePyramidNetwork(self.body.widths, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(OrderedDict(zip(FEATURE_NAMES, self.body(x))))


def _anchors(cfg: ZSIConfig) -> AnchorGenerator:
    return AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))


def _transform(cfg: ZSIConfig) -> GeneralizedRCNNTransform:
    return GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, cfg.mean, cfg.std)


class ZSIModel(nn.Module):
    """``forward(images, class_embeddings, targets=None, logit_offsets=None, relay=None, score_thresh=None)``.

    ``images``: list of float [3, H, W] in [0, 1]. ``class_embeddings``: [C, D] L2-normalized
    embeddings of the C labels (no background row: the model adds its own). Targets use labels
    1..C indexing those rows. Training returns a dict of losses; inference returns, per image,
    {"boxes" [N, 4] xyxy, "scores" [N], "labels" [N] in 1..C, "masks" [N, 1, H, W] probabilities};
    ``score_thresh`` there drops box-label candidates scoring at most it (None: the config's).
    """

    def __init__(self, config: ZSIConfig):
        super().__init__()
        self.config = cfg = config
        if len(cfg.anchor_sizes) != len(FEATURE_NAMES) + 1:
            raise ValueError(f"anchor_sizes needs {len(FEATURE_NAMES) + 1} sizes (FPN levels incl. pool)")
        self.backbone = FPNBackbone(cfg.backbone, cfg.fpn_channels, cfg.backbone_file)
        channels, anchors = cfg.fpn_channels, len(cfg.aspect_ratios)
        head = (BackgroundAwareRPNHead(channels, anchors, cfg.embed_dim) if cfg.ba_rpn
                else RPNHead(channels, anchors))
        pre, post = cfg.rpn_pre_nms_top_n, cfg.rpn_post_nms_top_n
        self.rpn = RegionProposalNetwork(
            _anchors(cfg), head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
            positive_fraction=0.5, pre_nms_top_n={"training": pre[0], "testing": pre[1]},
            post_nms_top_n={"training": post[0], "testing": post[1]}, nms_thresh=0.7)
        self.roi_heads = ZSIRoIHeads(
            MultiScaleRoIAlign(FEATURE_NAMES, 7, 2), TwoMLPHead(channels * 49, cfg.representation_size),
            SemanticBoxPredictor(cfg.representation_size, cfg.embed_dim),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=cfg.box_batch_size_per_image,
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh, detections_per_img=cfg.detections_per_img,
            mask_roi_pool=MultiScaleRoIAlign(FEATURE_NAMES, 14, 2),
            mask_head=MaskRCNNHeads(channels, list(cfg.mask_layers), 1),
            mask_predictor=SemanticMaskPredictor(cfg.mask_layers[-1], cfg.embed_dim),
            reconstruction_weight=cfg.reconstruction_weight)
        self.transform = _transform(cfg)
        # The fixed word embedding of "background" (baseline) or, with BA-RPN, V_b's starting point.
        self.register_buffer("word_background", torch.zeros(cfg.embed_dim))

    def set_word_background(self, embedding: torch.Tensor) -> None:
        """Store the text embedding of "background"; with BA-RPN it also initializes V_b."""
        with torch.no_grad():
            self.word_background.copy_(F.normalize(embedding.float().reshape(-1), dim=0))
            if self.config.ba_rpn:
                self.rpn.head.background.copy_(self.word_background)

    def background_embedding(self) -> torch.Tensor:
        """The background row used by the box and mask heads on this forward pass."""
        if self.config.ba_rpn:
            return self.rpn.head.background_embedding().detach()  # synchronized background
        return F.normalize(self.word_background, dim=0)

    def class_matrix(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """[1 + C, D]: the background row, then the labels' (re-normalized) embeddings."""
        if class_embeddings.ndim != 2 or class_embeddings.shape[1] != self.config.embed_dim:
            raise ZerosegError(f"class embeddings must be [C, {self.config.embed_dim}], "
                               f"got {list(class_embeddings.shape)}")
        labels = F.normalize(class_embeddings.to(self.word_background), dim=1)
        return torch.cat([self.background_embedding()[None], labels], 0)

    def forward(self, images: list[torch.Tensor], class_embeddings: torch.Tensor,
                targets: list[dict[str, torch.Tensor]] | None = None,
                logit_offsets: torch.Tensor | None = None, relay: BoxScoreRelay | None = None,
                score_thresh: float | None = None):
        if self.training and self.config.train_min_sizes:
            # one random size per batch (torchvision's transform draws one per image)
            sizes = self.config.train_min_sizes
            self.transform.min_size = (int(sizes[int(torch.randint(len(sizes), ()).item())]),)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        matrix = self.class_matrix(class_embeddings)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, matrix, targets,
                                                 logit_offsets, relay, score_thresh)
        if self.training:
            return {**rpn_losses, **head_losses}
        self.transform.min_size = (self.config.min_size,)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def create_plain_maskrcnn(config: ZSIConfig, num_classes: int) -> nn.Module:
    """torchvision's own Mask R-CNN with the same backbone and head sizes (the overhead baseline)."""
    from torchvision.models.detection import MaskRCNN  # heavy
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor  # heavy
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor  # heavy

    cfg = config
    backbone = FPNBackbone(cfg.backbone, cfg.fpn_channels, cfg.backbone_file)
    pre, post = cfg.rpn_pre_nms_top_n, cfg.rpn_post_nms_top_n
    return MaskRCNN(backbone, num_classes=None, min_size=cfg.min_size, max_size=cfg.max_size,
                    image_mean=cfg.mean, image_std=cfg.std, rpn_anchor_generator=_anchors(cfg),
                    rpn_pre_nms_top_n_train=pre[0], rpn_pre_nms_top_n_test=pre[1],
                    rpn_post_nms_top_n_train=post[0], rpn_post_nms_top_n_test=post[1],
                    box_head=TwoMLPHead(cfg.fpn_channels * 49, cfg.representation_size),
                    box_score_thresh=cfg.box_score_thresh, box_nms_thresh=cfg.box_nms_thresh,
                    box_detections_per_img=cfg.detections_per_img,
                    box_batch_size_per_image=cfg.box_batch_size_per_image,
                    mask_head=MaskRCNNHeads(cfg.fpn_channels, list(cfg.mask_layers), 1),
                    mask_predictor=MaskRCNNPredictor(cfg.mask_layers[-1], cfg.mask_layers[-1], num_classes),
                    box_predictor=FastRCNNPredictor(cfg.representation_size, num_classes))


# ----------------------------------------------------------------------------- registry
@cache
def _configs() -> dict[str, dict]:
    return json.loads(resources.files("zeroseg.models.zsi").joinpath("configs.json").read_text())


def get_zsi_config(name: str, **overrides) -> ZSIConfig:
    if name not in _configs():
        raise ZerosegError(f"unknown instance model configuration {name!r}; known: {', '.join(sorted(_configs()))}")
    try:
        return ZSIConfig.from_dict({**_configs()[name], **overrides})
    except (TypeError, ValueError) as e:
        raise ZerosegError(f"bad overrides for {name!r}: {e}") from None


def create_zsi_model(name_or_config: str | ZSIConfig | dict, **overrides) -> ZSIModel:
    """A ZSI network (randomly initialized heads; backbone from ``backbone_file`` if set)."""
    if isinstance(name_or_config, str):
        cfg = get_zsi_config(name_or_config, **overrides)
    elif isinstance(name_or_config, dict):
        cfg = ZSIConfig.from_dict({**name_or_config, **overrides})
    else:
        cfg = dataclasses.replace(name_or_config, **overrides)
    return ZSIModel(cfg)


# ----------------------------------------------------------------------------- files
def save_zsi_model(path: str | Path, model: ZSIModel, extra: dict | None = None) -> None:
    """Weights + JSON config (and ``extra``, e.g. the seen/unseen split) as one safetensors file."""

    config = {**model.config.to_dict(), "backbone_file": None}  # weights are inside; no external file
    meta = {"format": SAFETENSORS_FORMAT, "config": json.dumps(config)}
    if extra:
        meta["extra"] = json.dumps(extra)
    write_safetensors(path, model.state_dict(), meta)


def load_zsi_model(path: str | Path) -> tuple[ZSIModel, dict]:
    """(model in eval mode, extra metadata) from a file written by ``save_zsi_model``."""

    path = Path(path)
    config_dict, meta = read_model_file(path, SAFETENSORS_FORMAT, "instance model")
    try:
        config = ZSIConfig.from_dict(config_dict)
    except (ValueError, TypeError) as e:
        raise ZerosegError(f"{path} has a malformed config: {e}") from None
    extra = metadata_json(meta, "extra", path, {})
    try:
        with torch.device("meta"):
            model = ZSIModel(config)
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ZerosegError(f"{path}: its config does not describe a buildable model "
                           f"(backbone {config.backbone!r}): {reason}") from None
    state = read_safetensors(path)
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ZerosegError(f"{path} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, assign=True)
    return model.eval(), extra
