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

``BoxRelay`` is the same rule for a detector's box classifier (ZSI): every box is a "pixel" whose
scores are [background, asked labels], so objectness stays the detector's and only the name is
relayed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["HUB_NEIGHBOURS", "relay_logits", "relay_similarity", "relay_weights", "BoxRelay"]

HUB_NEIGHBOURS = 10  # vocabulary entries that measure how much of a hub a label is


def relay_similarity(vocabulary: torch.Tensor, labels: torch.Tensor, hubness: float = 0.0,
                     neighbours: int = HUB_NEIGHBOURS) -> torch.Tensor:
    """Text cosines [V, C] between the trained vocabulary's embeddings [V, D] and the asked
    labels' [C, D], each label's column lowered by ``hubness`` x its mean cosine with its
    ``neighbours`` nearest vocabulary entries.

    Why: a label whose name sits near many trained names (a hub, e.g. "goat" among 141 trained
    animals and objects) is close to most convex combinations of them and wins pixels of every
    unknown object; the correction is the cross-domain similarity local scaling of Lample et al.
    (ICLR 2018, "Word translation without parallel data") on the label side. It shifts each label
    by a constant, so it changes which name a pixel gets, never whether it is background.
    """
    similarity = F.normalize(vocabulary, dim=-1) @ F.normalize(labels, dim=-1).T
    if hubness:
        k = min(int(neighbours), similarity.shape[0])
        similarity = similarity - hubness * similarity.topk(k, dim=0).values.mean(0, keepdim=True)
    return similarity


def relay_weights(vocabulary_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """The relay's per-pixel weights over the trained vocabulary [B, V, H, W]: the softmax of
    ``vocabulary_logits``, cut to its ``top_k`` largest entries (0 or >= V: all) and renormalized."""
    weights = vocabulary_logits.softmax(dim=1)
    if 0 < top_k < weights.shape[1]:
        kth = weights.topk(top_k, dim=1).values[:, -1:]
        weights = weights * (weights >= kth)
        weights = weights / weights.sum(dim=1, keepdim=True)
    return weights


def relay_logits(direct: torch.Tensor, vocabulary_logits: torch.Tensor, similarity: torch.Tensor,
                 background: int | None, top_k: int, scale: float,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, C, H, W] whose arg-max is the relay's decision.

    ``direct``: the asked labels' logits [B, C, H, W]; ``vocabulary_logits``: the trained
    vocabulary's [B, V, H, W] from the same pass; ``similarity``: text cosines [V, C] between
    vocabulary and asked labels; ``background``: the index of the background label among the
    asked ones (None: every pixel is named); ``top_k``: vocabulary entries kept per pixel (0 or
    >= V: all); ``scale``: multiplies the relay scores (the model's logit scale); ``weights``:
    ``relay_weights(vocabulary_logits, top_k)`` when the caller already has them (several
    similarities tried on one pass).

    The named labels get ``scale * (s_c - max_c s_c)``, where ``s_c`` is the weighted similarity,
    so the best one scores 0; the background gets its direct margin over the best other label,
    so it wins exactly where it won before.
    """
    if weights is None:
        weights = relay_weights(vocabulary_logits, top_k)
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


@dataclass
class BoxRelay:
    """The relay for box scores [N, 1 + C] (column 0: background), as ZSI's RoI heads take it.

    ``embeddings``: the trained vocabulary's text embeddings [V, D], scored by the box head in
    the same pass as the asked labels; ``similarity``: text cosines [V, C] between vocabulary and
    asked labels; ``scale`` turns the relay's similarity differences into logits (detectors have
    no logit scale of their own, so it is chosen on val like ``top_k``).
    """

    embeddings: torch.Tensor
    similarity: torch.Tensor
    top_k: int
    scale: float

    @classmethod
    def from_text(cls, vocabulary: torch.Tensor, labels: torch.Tensor, top_k: int, scale: float,
                  hubness: float = 0.0) -> "BoxRelay":
        """From raw text embeddings of the vocabulary [V, D] and the asked labels [C, D]."""
        vocabulary = F.normalize(vocabulary.float(), dim=-1)
        return cls(vocabulary, relay_similarity(vocabulary, labels.float(), hubness), int(top_k), float(scale))

    def __call__(self, direct: torch.Tensor, vocabulary_logits: torch.Tensor) -> torch.Tensor:
        """Box logits [N, 1 + C] from the direct ones and the vocabulary's [N, V]."""
        # a zero column for the background, so columns line up with ``direct`` (relay_logits
        # never reads the background's relay score)
        similarity = torch.cat([self.similarity.new_zeros(self.similarity.shape[0], 1), self.similarity], 1)
        out = relay_logits(direct[:, :, None, None], vocabulary_logits[:, :, None, None], similarity,
                           0, self.top_k, self.scale)
        return out[:, :, 0, 0]
