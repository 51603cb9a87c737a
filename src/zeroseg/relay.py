"""Seen-class relay: naming pixels through the classes the model trained on (ConSE).

An LSeg model trained on seen classes scores a new name by the cosine between a pixel's
embedding and the name's text embedding. Training only ever pulled pixel embeddings towards the
trained names, and for new names that direct match generalizes poorly. The relay names a pixel
by what the model does know: its softmax over the trained vocabulary, cut to the top ``k``,
weights those names' text embeddings into a convex combination, and each asked label scores by
its text similarity to that combination (ConSE, Norouzi et al., ICLR 2014, "Zero-Shot Learning
by Convex Combination of Semantic Embeddings"). Whether a pixel is background is still decided
by the direct scores (the background label against the best other label); only the naming among
the other labels changes, so a binary query ``[background, name]`` gives the direct answer.
"""
from __future__ import annotations

import torch

__all__ = ["relay_logits"]


def relay_logits(direct: torch.Tensor, vocabulary_logits: torch.Tensor, similarity: torch.Tensor,
                 background: int | None, top_k: int, scale: float) -> torch.Tensor:
    """Logits [B, C, H, W] whose arg-max is the relay's decision.

    ``direct``: the asked labels' logits [B, C, H, W]; ``vocabulary_logits``: the trained
    vocabulary's [B, V, H, W] from the same pass; ``similarity``: text cosines [V, C] between
    vocabulary and asked labels; ``background``: the index of the background label among the
    asked ones (None: every pixel is named); ``top_k``: vocabulary entries kept per pixel (0 or
    >= V: all); ``scale``: multiplies the relay scores (the model's logit scale).

    The named labels get ``scale * (s_c - max_c s_c)``, where ``s_c`` is the weighted similarity,
    so the best one scores 0; the background gets its direct margin over the best other label,
    so it wins exactly where it won before.
    """
    weights = vocabulary_logits.softmax(dim=1)
    v = weights.shape[1]
    if 0 < top_k < v:
        kth = weights.topk(top_k, dim=1).values[:, -1:]
        weights = weights * (weights >= kth)
        weights = weights / weights.sum(dim=1, keepdim=True)
    scores = torch.einsum("bvhw,vc->bchw", weights, similarity.to(weights.dtype))
    named = [i for i in range(direct.shape[1]) if i != background]
    if background is None:
        return scale * (scores - scores.amax(dim=1, keepdim=True))
    out = direct.clone()
    if named:
        s = scores[:, named]
        out[:, named] = scale * (s - s.amax(dim=1, keepdim=True))
        out[:, background] = direct[:, background] - direct[:, named].amax(dim=1)
    return out
