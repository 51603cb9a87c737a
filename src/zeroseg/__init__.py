"""zeroseg: zero-shot segmentation driven by language (LSeg, SAZS, ZSI)."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_model", "create_model", "Segmenter", "Segmentation", "load_instance_model", "InstanceSegmenter",
           "Instances", "ZerosegError", "__version__"]


def __getattr__(name):  # heavy imports (torch, timm) happen on first use, so `zeroseg --help` is fast
    if name in ("load_model", "Segmenter", "Segmentation"):
        from . import api  # startup

        return getattr(api, name)
    if name in ("load_instance_model", "InstanceSegmenter", "Instances"):
        from . import instance_segmenter  # startup

        return getattr(instance_segmenter, name)
    if name == "create_model":
        from .models.registry import create_model  # startup

        return create_model
    if name == "ZerosegError":
        from .errors import ZerosegError  # startup

        return ZerosegError
    raise AttributeError(name)
