"""CLIP text towers through open_clip: from an LSeg checkpoint's weights or a local file."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ZerosegError
from .base import TextEncoder


def tower_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Read an OpenAI-layout CLIP text tower's shape from its weights."""
    layers = {k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}
    width = sd["ln_final.weight"].shape[0]
    return dict(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=width,
        heads=width // 64,
        layers=len(layers),
        output_dim=sd["text_projection"].shape[1],
    )


def build_text_tower(config: dict) -> nn.Module:
    """An open_clip ``TextTransformer`` with OpenAI CLIP's choices (QuickGELU, arg-max pooling)."""
    from open_clip.transformer import LayerNorm, QuickGELU, TextTransformer  # optional

    return TextTransformer(**config, act_layer=QuickGELU, norm_layer=LayerNorm, pool_type="argmax")


class ClipTextEncoder(TextEncoder):
    """Any callable CLIP text model (tokens -> features) with the CLIP BPE tokenizer."""

    def __init__(self, tower: nn.Module, dim: int, name: str = "clip", templates: list[str] | None = None,
                 encode_fn=None):
        super().__init__(templates)
        from open_clip.tokenizer import SimpleTokenizer  # optional

        self.tower = tower.eval()
        self.dim = int(dim)
        self.name = name
        self.tokenizer = SimpleTokenizer()
        self._encode_fn = encode_fn or tower

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.tower.parameters()).device
        tokens = self.tokenizer(texts).to(device)
        return self._encode_fn(tokens).float()

    def to(self, device) -> "ClipTextEncoder":
        self.tower.to(device)
        return self


def load_open_clip(name: str, weights_file: str, templates: list[str] | None = None) -> ClipTextEncoder:
    """``clip:<name>@<file>``: an open_clip model built from its config, weights from a local file."""
    import open_clip  # optional


    if name not in open_clip.list_models():
        raise ZerosegError(f"unknown open_clip model {name!r}")
    try:
        model = open_clip.create_model(name, pretrained=weights_file, device="cpu")
    except (RuntimeError, OSError, ValueError) as e:
        raise ZerosegError(f"cannot load CLIP weights {weights_file}: {str(e).splitlines()[0]}") from None
    dim = model.text_projection.shape[1] if isinstance(model.text_projection, torch.Tensor) else model.embed_dim
    return ClipTextEncoder(model, dim, name=f"clip:{name}", templates=templates, encode_fn=model.encode_text)
