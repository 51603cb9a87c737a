"""Text encoders: ``clip:<name>[@file]``, ``minilm``, ``wordvec:<path>``; all share ``TextEncoder``."""
from __future__ import annotations

from ..errors import ZerosegError
from .base import CachedTextEncoder, TextEncoder
from .random import RandomTextEncoder

__all__ = ["TextEncoder", "CachedTextEncoder", "create_text_encoder"]


def create_text_encoder(spec: str, templates: list[str] | None = None, cache: bool = True) -> TextEncoder:
    """Build a text encoder from its spec string (weights never come from a network)."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm":
        from .minilm import MiniLMEncoder  # optional: sentence-transformers

        enc: TextEncoder = MiniLMEncoder(templates)
    elif kind == "wordvec":
        from .wordvec import WordVectorEncoder  # optional: parquet reader

        enc = WordVectorEncoder(arg, templates)
    elif kind == "clip":
        name, _, weights = arg.partition("@")
        if not weights:
            raise ZerosegError(
                f"text encoder {spec!r} needs local weights: use clip:{name}@/path/to/open_clip_weights "
                "(zeroseg never downloads), or load a checkpoint that carries its CLIP text tower")
        from .clip import load_open_clip  # optional: open_clip

        enc = load_open_clip(name, weights, templates)
    elif kind == "random":  # test/debug only: vectors without meaning
        try:
            enc = RandomTextEncoder(int(arg))
        except ValueError:
            raise ZerosegError(f"bad text encoder {spec!r}; expected random:<dim>") from None
    else:
        raise ZerosegError(f"unknown text encoder {spec!r}; expected clip:<name>@<file>, minilm or wordvec:<path>")
    return CachedTextEncoder(enc) if cache else enc
