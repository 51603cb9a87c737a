"""ONNX export of an LSeg network, and a runtime that runs the exported file with onnxruntime.

What is exported: the whole image side *and* the scoring, as one graph

    (images [B, 3, H, W] normalized, text [C, D]) -> (logits [B, C, H, W], pixels [B, D, H/2, W/2])

with B, H, W and C dynamic. The text embeddings are a second input rather than baked in, so one
file serves any label set, and the text encoder stays in zeroseg (where embeddings are cached
per label set, and where a CLIP text tower would otherwise need exporting as a second model).
Scoring and the spatial regularization blocks are in the graph because they are part of the
network's function (the regularization has learned weights): a runtime needs nothing from
PyTorch but the text embeddings. H and W must be multiples of the model's stride (``Segmenter``
pads them). The model config, the text encoder spec and the stride are stored in the file's
metadata, so ``zeroseg.api.load_onnx_model`` rebuilds the rest.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ZerosegError
from .io import atomic_path
from .models.lseg import LSegConfig, LSegNet, upsample_logits

ONNX_FORMAT = "zeroseg/lseg-onnx-2"  # 2: logits at half resolution (1: full)
OPSET = 18

__all__ = ["ONNX_FORMAT", "ZSI_ONNX_FORMAT", "export_onnx", "export_zsi_onnx", "OnnxLSeg"]


@contextlib.contextmanager
def _quiet_exporter():
    """The TorchScript exporter warns about every traced size computation and its own
    deprecation; the equivalence tests, not these warnings, say whether the graph is right."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)  # tracing notes from torch and torchvision
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript.*")
        yield


class _ExportGraph(nn.Module):
    """The function that goes into the ONNX file."""

    def __init__(self, model: LSegNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.model.pixel_embeddings(images)
        # half-resolution logits: the runtime upsamples them (``upsample_logits``) after any
        # per-pixel work that is cheaper on a quarter of the pixels (the seen-class relay)
        return self.model.score(pixels, text, upsample=False), pixels


def export_onnx(model: LSegNet, path: str | Path, *, text_encoder: str | None = None, sample_size: int = 64,
                num_labels: int = 3, label_offsets: dict | None = None, relay: dict | None = None) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` as ONNX; returns the path.

    ``text_encoder``: the spec stored for the runtime (default: the model config's);
    ``label_offsets``: the model file's calibration (``Segmenter.label_offsets``), stored too, as
    is ``relay`` (``Segmenter.relay_settings()``, the segmenter's seen-class relay).
    """
    import onnx  # optional


    path = Path(path)
    model = model.float().cpu().eval()
    cfg = model.config
    size = max(model.stride, sample_size // model.stride * model.stride)
    images = torch.randn(1, 3, size, size + model.stride)
    text = F.normalize(torch.randn(num_labels, cfg.embed_dim), dim=1)
    graph = _ExportGraph(model).eval()
    dims = {"images": {0: "batch", 2: "height", 3: "width"}, "text": {0: "labels"},
            "logits": {0: "batch", 1: "labels", 2: "height_2", 3: "width_2"},
            "pixels": {0: "batch", 2: "height_2", 3: "width_2"}}
    with atomic_path(path) as tmp, torch.no_grad(), _quiet_exporter():
        torch.onnx.export(graph, (images, text), str(tmp), input_names=["images", "text"],
                          output_names=["logits", "pixels"], dynamic_axes=dims, opset_version=OPSET,
                          dynamo=False)
        model.eval()  # the exporter may leave submodules in training mode
        proto = onnx.load(str(tmp))
        meta = {"format": ONNX_FORMAT, "config": json.dumps(cfg.to_dict()),
                "text_encoder": text_encoder or cfg.text_encoder, "stride": str(model.stride),
                "label_offsets": json.dumps(dict(label_offsets or {})), "relay": json.dumps(dict(relay or {}))}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return path


class OnnxLSeg:
    """An onnxruntime session with the interface ``Segmenter`` needs from an ``LSegNet``:
    ``stride``, ``config``, ``__call__(x, text, upsample=True) -> logits`` and ``pixel_embeddings(x)``."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort  # optional
        except ImportError:
            raise ZerosegError("the onnx runtime needs the onnxruntime package: pip install onnxruntime") from None
        path = Path(path)
        if not path.is_file():
            raise ZerosegError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ZerosegError(f"cannot read ONNX model {path}: {str(e).strip().splitlines()[0][:200]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format", "").startswith("zeroseg/lseg-onnx-") and meta["format"] != ONNX_FORMAT:
            raise ZerosegError(f"{path} was exported by another zeroseg version ({meta['format']}, this one reads "
                               f"{ONNX_FORMAT}): export it again with `zeroseg export`")
        if meta.get("format") != ONNX_FORMAT:
            raise ZerosegError(f"{path} is not a zeroseg ONNX export (no '{ONNX_FORMAT}' metadata)")
        try:
            self.config = LSegConfig.from_dict(json.loads(meta["config"]))
        except (KeyError, ValueError, TypeError) as e:
            raise ZerosegError(f"{path}: bad model config in its metadata: {e}") from None
        self.text_encoder_spec = meta.get("text_encoder", self.config.text_encoder)
        self.stride = int(meta.get("stride", 32))
        try:
            self.label_offsets = {str(k): float(v) for k, v in json.loads(meta.get("label_offsets", "{}")).items()}
        except (ValueError, TypeError, AttributeError):
            raise ZerosegError(f"{path}: malformed label_offsets in its metadata") from None
        try:
            relay = json.loads(meta.get("relay", "{}"))
            # Segmenter's constructor arguments, as Segmenter.relay_settings() wrote them
            self.relay = {"relay_vocabulary": [str(v) for v in relay.get("relay_vocabulary", [])],
                          "relay_top_k": int(relay.get("relay_top_k", 0)),
                          "background": str(relay.get("background", "other")),
                          "relay_hubness": float(relay.get("relay_hubness", 0.0))}
        except (ValueError, TypeError, AttributeError):
            raise ZerosegError(f"{path}: malformed relay in its metadata") from None
        self.path = path

    # the nn.Module methods Segmenter calls
    def to(self, device) -> "OnnxLSeg":
        if torch.device(device).type != "cpu":
            raise ZerosegError("the onnx runtime runs on the CPU here; use --device cpu")
        return self

    def eval(self) -> "OnnxLSeg":
        return self

    def _run(self, x: torch.Tensor, text: torch.Tensor) -> list[np.ndarray]:
        feeds = {"images": np.ascontiguousarray(x.detach().cpu().float().numpy()),
                 "text": np.ascontiguousarray(text.detach().cpu().float().numpy())}
        return self.session.run(None, feeds)

    def __call__(self, x: torch.Tensor, text: torch.Tensor, upsample: bool = True) -> torch.Tensor:
        half = torch.from_numpy(self._run(x, text)[0])
        return upsample_logits(half) if upsample else half

    def pixel_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        text = torch.zeros(1, self.config.embed_dim)
        text[0, 0] = 1.0
        return torch.from_numpy(self._run(x, text)[1])

    def decoder_features(self, x: torch.Tensor) -> torch.Tensor:
        raise ZerosegError("an ONNX export holds no decoder features; use --spectral-features imagenet "
                           "or the PyTorch model for decoder-feature refinement")


ZSI_ONNX_FORMAT = "zeroseg/zsi-onnx-1"


class _ZSIExportGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, class_embeddings: torch.Tensor):
        out = self.model([image], class_embeddings)[0]
        return out["boxes"], out["scores"], out["labels"], out["masks"]


def export_zsi_onnx(model: nn.Module, path: str | Path, *, num_labels: int = 3) -> Path:
    """Write a ZSI model (inference: transform, backbone, BA-RPN, semantic heads, post-processing)
    as ONNX: ``(image [3, H, W] in [0, 1], class_embeddings [C, D]) -> (boxes [N, 4], scores [N],
    labels [N] in 1..C, masks [N, 1, H, W] probabilities)``, H, W and C dynamic, one image per call.

    torchvision's Mask R-CNN traces with data-dependent detection counts; what it does not allow
    is a batch: the per-image split of the mask head's output is traced as constants, so the
    export takes exactly one image (``ZSIRoIHeads`` skips the split for one image)."""
    import onnx  # optional


    path = Path(path)
    model = model.float().cpu().eval()
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, cfg.min_size, cfg.min_size + 32, generator=gen)
    emb = F.normalize(torch.randn(num_labels, cfg.embed_dim, generator=gen), dim=1)
    dims = {"image": {1: "height", 2: "width"}, "class_embeddings": {0: "labels"},
            "boxes": {0: "detections"}, "scores": {0: "detections"}, "labels": {0: "detections"},
            "masks": {0: "detections", 2: "height", 3: "width"}}
    with atomic_path(path) as tmp, torch.no_grad(), _quiet_exporter():
        torch.onnx.export(_ZSIExportGraph(model), (image, emb), str(tmp), input_names=["image", "class_embeddings"],
                          output_names=["boxes", "scores", "labels", "masks"], dynamic_axes=dims,
                          opset_version=OPSET, dynamo=False)
        model.eval()  # the exporter may leave submodules in training mode
        proto = onnx.load(str(tmp))
        for key, value in {"format": ZSI_ONNX_FORMAT, "config": json.dumps(cfg.to_dict())}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return path
