"""Every read and write of a weights file in zeroseg goes through here.

- ``.safetensors`` model files (LSeg ``zeroseg/lseg-1``, ZSI ``zeroseg/zsi-1``): tensors + string
  metadata (``format``, ``config`` as JSON, optional ``extra`` as JSON);
- PyTorch files (official checkpoints, local backbone/ViT weights, training ``state.pt``), read
  with ``torch.load(weights_only=True)``: the unpickler accepts only tensors and plain containers,
  so a malicious pickle's payload never runs.

Reads turn truncated, corrupt or foreign files into one-line ``ZerosegError``s; writes go to a
temporary name and are renamed into place, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ZerosegError
from ..io import atomic_path

__all__ = ["read_safetensors_metadata", "read_safetensors", "write_safetensors", "read_model_file",
           "read_torch_file", "read_torch_state_dict", "write_torch_file", "read_state_dict_file",
           "metadata_json", "one_line"]


def one_line(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line (torch's zip errors run to several sentences)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- safetensors -------------------------------------------------------------------------------
def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The file's string metadata ({} if none), reading only its header."""
    from safetensors import safe_open  # heavy

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # safetensors raises its own types for short or foreign headers
        raise ZerosegError(f"cannot read {path} (truncated or not safetensors): {str(e).splitlines()[0]}") from None


def read_safetensors(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors (or those whose key starts with ``prefix``, with the prefix removed)."""
    from safetensors.torch import load_file  # heavy

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise ZerosegError(f"cannot read {path} (truncated or not safetensors): {one_line(e)}") from None
    if prefix is None:
        return tensors
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write tensors + metadata atomically (tensors made contiguous, on the CPU)."""
    from safetensors.torch import save_file  # heavy

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def metadata_json(meta: dict[str, str], key: str, path: str | Path, default: Any = None) -> Any:
    """A JSON-valued metadata entry, or ``default`` where absent; malformed JSON is one line."""
    raw = meta.get(key)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise ZerosegError(f"{path} has malformed '{key}' metadata") from None


def read_model_file(path: str | Path, fmt: str, what: str = "model") -> tuple[dict, dict[str, str]]:
    """(config dict, metadata) of a zeroseg model file of format ``fmt``, checked; the tensors
    are read separately (``read_safetensors``) once the caller has built the model."""
    path = Path(path)
    if not path.is_file():
        raise ZerosegError(f"{what} file not found: {path}")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != fmt or "config" not in meta:
        raise ZerosegError(f"{path} is not a zeroseg {what} (no '{fmt}' metadata)")
    config = metadata_json(meta, "config", path)
    if not isinstance(config, dict):
        raise ZerosegError(f"{path} has a malformed config")
    return config, meta


# -- PyTorch files -----------------------------------------------------------------------------
def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped where the format allows."""
    path = Path(path)
    if not path.is_file():
        raise ZerosegError(f"{what} not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files in the legacy (pre-zip) format cannot be memory-mapped: read them whole
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ZerosegError(f"cannot read {what} {path} (truncated or not a PyTorch file): {one_line(e)}") from None
    except Exception as e:  # the unpickler refuses anything but tensors and plain containers
        raise ZerosegError(f"cannot read {what} {path}: {type(e).__name__}: {one_line(e)}") from None


def read_torch_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a PyTorch(-Lightning) checkpoint: tensors only."""
    obj = read_torch_file(path, what)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ZerosegError(f"{path} holds no state_dict of tensors")
    return sd


def write_torch_file(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically (training state: tensors, numbers, strings and containers only)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_state_dict_file(path: str | Path, what: str = "weights") -> Any:
    """A local weights file of either kind: ``.safetensors`` (recognized by its header too) or a
    PyTorch file; returns what it holds (the caller unwraps nested state dicts)."""
    path = Path(path)
    if not path.exists():
        raise ZerosegError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ZerosegError(f"expected a {what} file, got a directory: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{"):  # safetensors header
        try:
            return read_safetensors(path)
        except ZerosegError:
            raise ZerosegError(f"cannot read {what} {path} (truncated, corrupt or not a state dict)") from None
    return read_torch_file(path, what)
