"""Word vectors from a word2vec or GloVe text file; multi-word labels are averaged."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import ZerosegError
from .base import TextEncoder


class WordVectorEncoder(TextEncoder):
    """``wordvec:<path>``. Reads only the vectors it needs, once per word."""

    def __init__(self, path: str, templates: list[str] | None = None):
        super().__init__(templates)

        self.path = Path(path)
        if not self.path.is_file():
            raise ZerosegError(f"word-vector file not found: {path}")
        self.name = f"wordvec:{self.path.name}"
        self._vectors: dict[str, np.ndarray] = {}
        self.dim = self._read_dim()

    def _read_dim(self) -> int:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            first = f.readline().split()
            if len(first) == 2 and all(p.isdigit() for p in first):  # word2vec header "N D"
                return int(first[1])
            if len(first) < 2:
                raise ZerosegError(f"{self.path} is not a word-vector text file")
            return len(first) - 1

    @staticmethod
    def words(text: str) -> list[str]:
        return [w for w in re.split(r"[^0-9a-zA-Z']+", text.lower()) if w]

    def _load(self, wanted: set[str]) -> None:
        wanted = wanted - self._vectors.keys()
        if not wanted:
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                word, _, rest = line.partition(" ")
                if word in wanted:
                    vec = np.array(rest.split(), dtype=np.float32)
                    if vec.shape[0] == self.dim:
                        self._vectors[word] = vec
                        wanted.discard(word)
                        if not wanted:
                            break

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        split = [self.words(t) for t in texts]
        self._load({w for ws in split for w in ws})
        out = []
        for text, ws in zip(texts, split):
            vecs = [self._vectors[w] for w in ws if w in self._vectors]
            if not vecs:
                raise ZerosegError(f"no word of {text!r} is in {self.path.name}")
            out.append(np.mean(vecs, axis=0))
        return torch.from_numpy(np.stack(out))
