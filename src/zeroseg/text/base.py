"""The interface every text encoder shares: ``encode(labels) -> [C, dim]``, L2-normalized."""
from __future__ import annotations

import string
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from ..errors import ZerosegError


class TextEncoder(ABC):
    """Embeds label names. Subclasses implement ``embed_texts`` on raw strings.

    ``templates`` (e.g. ``["a photo of a {}"]``) are optional; with several, the normalized
    embeddings of all prompts for a label are averaged and normalized again.
    """

    name: str = "text"
    dim: int = 0

    def __init__(self, templates: list[str] | None = None):
        self.templates = self.checked_templates(templates)

    @staticmethod
    def checked_templates(templates: list[str] | None) -> list[str]:
        templates = list(templates) if templates else ["{}"]
        for t in templates:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
            except ValueError as e:
                raise ZerosegError(f"prompt template {t!r} is malformed ({e}); write braces as {{{{ }}}}") from None
            if not fields:
                raise ZerosegError(f"prompt template {t!r} has no '{{}}' for the label")
            if fields != [""]:
                raise ZerosegError(f"prompt template {t!r} must hold exactly one '{{}}' for the label "
                                   f"and no other {{fields}}, e.g. 'a photo of a {{}}'")
        return templates

    @abstractmethod
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Raw (not necessarily normalized) embeddings [len(texts), dim]."""

    @property
    def key(self) -> str:
        """Identifies the function ``encode`` computes (for caches)."""
        return f"{self.name}|{'|'.join(self.templates)}"

    @torch.no_grad()
    def encode(self, labels: list[str]) -> torch.Tensor:
        if not labels:
            raise ValueError("empty label set")
        prompts = [t.format(label) for label in labels for t in self.templates]
        emb = F.normalize(self.embed_texts(prompts).float(), dim=-1)
        emb = emb.reshape(len(labels), len(self.templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)


class CachedTextEncoder(TextEncoder):
    """Wraps any encoder; each (encoder, templates, label) is embedded once per process."""

    def __init__(self, inner: TextEncoder):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.templates = inner.templates
        self._cache: dict[str, torch.Tensor] = {}
        self.misses = 0

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.inner.embed_texts(texts)

    def encode(self, labels: list[str]) -> torch.Tensor:
        if not labels:
            raise ValueError("empty label set")
        missing = list(dict.fromkeys(label for label in labels if label not in self._cache))
        if missing:
            self.misses += len(missing)
            for label, emb in zip(missing, self.inner.encode(missing)):
                self._cache[label] = emb
        return torch.stack([self._cache[label] for label in labels])

    def __getattr__(self, item):  # delegate the rest (e.g. the CLIP tower) to the wrapped encoder
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)
