"""TEST/DEBUG ONLY: the ``random:D`` text encoder (a fixed unit vector per label)."""
from __future__ import annotations

import hashlib

import torch

from .base import TextEncoder


class RandomTextEncoder(TextEncoder):
    """A fixed vector per label, seeded by its SHA-256: the same vectors in every process and
    every run, no weights to load. It carries no meaning, so a model trained with it segments
    nothing useful; tests use it to train without MiniLM."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.name = f"random:{self.dim}"

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(t.encode()).hexdigest()[:15], 16))
            rows.append(torch.randn(self.dim, generator=g))
        return torch.stack(rows)
