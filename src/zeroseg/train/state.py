"""A training run's files: ``state.pt`` (exact resume: weights, optimizer, RNG, data position),
``log.csv``, and the removal of temporary files a killed run left."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ZerosegError
from ..io import atomic_path
from ..models.weight_io import read_torch_file

__all__ = ["STATE_FORMAT", "LOG_FIELDS", "CsvLog", "read_state", "rng_state", "set_rng_state",
           "remove_stale_temp_files", "write_text_atomic"]


STATE_FORMAT = "zeroseg-train-state/1"


def rng_state() -> dict:
    """RNG states as tensors and plain lists (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def read_state(path: str | Path) -> dict:
    """A training state from ``state.pt`` or the run directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / "state.pt"
    if not p.is_file():
        raise ZerosegError(f"no training state to resume at {path} (expected a run directory or its state.pt)")

    state = read_torch_file(p, "training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ZerosegError(f"{p} is not a zeroseg training state")
    return state


_RUN_TEMP = re.compile(r"^\.(state\.pt|.+\.safetensors|log\.csv|config\.yaml)\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temp_files(out: Path) -> list[str]:
    """Delete half-written files a killed run left behind (only one process writes a run's
    folder, so at start any such file is stale); returns their names."""
    removed = []
    for f in out.iterdir():
        if _RUN_TEMP.match(f.name) and f.is_file():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f.name)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


LOG_FIELDS = ["epoch", "step", "loss", "lr", "val_seen_miou", "seconds"]


class CsvLog:
    """``log.csv``; on resume, rows after the resumed step are dropped (atomic rewrite)."""

    def __init__(self, path: Path, resume_step: int | None, fields: list[str] | None = None):
        self.path = path
        self.fields = fields or LOG_FIELDS
        rows: list[dict] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in self.fields} for r in rows)
        write_text_atomic(path, buf.getvalue())

    def write(self, **row: Any) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, self.fields, lineterminator="\n").writerow({k: row.get(k, "") for k in self.fields})
        # one append of the whole line: a crash cannot leave a half row in practice
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, buf.getvalue().encode())
        finally:
            os.close(fd)
