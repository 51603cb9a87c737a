"""Device names checked once, with one clear line for anything unusable."""
from __future__ import annotations

import torch

from .errors import ZerosegError


def resolve_device(spec: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present) -> a usable ``torch.device``."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ZerosegError(f"device {spec!r} requested but CUDA is not available on this machine; use --device cpu")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ZerosegError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise ZerosegError(f"unknown device {spec!r}; expected cpu, cuda, cuda:N or auto")
