"""zeroseg: zero-shot segmentation driven by language (LSeg, SAZS, ZSI)."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_model", "load_onnx_model", "create_model", "list_models", "list_weights", "Segmenter",
           "Segmentation", "load_instance_model", "InstanceSegmenter", "Instances", "segment_files", "detect_files",
           "ZerosegError", "__version__"]


def __getattr__(name):  # heavy imports (torch, timm) happen on first use, so `zeroseg --help` is fast
    if name in ("load_model", "load_onnx_model", "Segmenter", "Segmentation"):
        from . import api  # startup

        return getattr(api, name)
    if name in ("load_instance_model", "InstanceSegmenter", "Instances"):
        from . import instance_segmenter  # startup

        return getattr(instance_segmenter, name)
    if name in ("create_model", "list_models", "list_weights"):
        from .models import registry  # startup

        return getattr(registry, name)
    if name in ("segment_files", "detect_files"):
        from . import batch_tasks  # startup

        return getattr(batch_tasks, name)
    if name == "ZerosegError":
        from .errors import ZerosegError  # startup

        return ZerosegError
    raise AttributeError(name)
