"""Pixel affinity graphs for spectral segmentation (Deep Spectral Methods / SAZS).

``W = max(F F^T, 0)`` over L2-normalized per-pixel features, optionally kept to each node's ``knn``
most similar nodes (then symmetrized), plus ``lam`` times a kNN affinity in (colour, position) space
of the image downsampled to the feature grid. Graphs are ``scipy.sparse`` CSR matrices (float64,
zero diagonal); ``dense=True`` gives an ``np.ndarray`` of the same graph for tests and references.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .features import color_position_points

# Defaults tuned on smooth random fields (benchmarks/bench_spectral.py), not on the test data.
DEFAULT_KNN = 10  # feature neighbours per node: sparse enough for a fast solver, still one component
DEFAULT_COLOR_KNN = 10  # colour/position neighbours per node
CHUNK_ROWS = 256  # similarity rows per block: keeps the N x N matrix out of memory and in cache

Graph = sp.csr_matrix | np.ndarray


def feature_matrix(features: Any) -> tuple[torch.Tensor, tuple[int, int]]:
    """[C, h, w] (torch or numpy) -> L2-normalized per-pixel vectors [h*w, C] (float32) and (h, w)."""
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if f.ndim != 3:
        raise ValueError(f"features must be [C, h, w], got shape {tuple(f.shape)}")
    c, h, w = f.shape
    x = f.detach().cpu().float().reshape(c, h * w).T
    return F.normalize(x, dim=1).contiguous(), (int(h), int(w))


def knn_indices(x: torch.Tensor, knn: int, *, chunk: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``knn`` most cosine-similar other rows of unit vectors ``x`` [N, C] -> (sims, idx) [N, knn].

    Exact, blockwise: ``chunk`` rows of the similarity matrix at a time (the N x N matrix never exists).
    """
    n = x.shape[0]
    knn = min(knn, n - 1)
    xt = x.T.contiguous()
    block = torch.empty(min(chunk, n), n)
    sims = torch.empty(n, knn)
    idx = torch.empty(n, knn, dtype=torch.long)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        s = torch.mm(x[start:stop], xt, out=block[: stop - start])
        s[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf  # no self edges
        torch.topk(s, knn, dim=1, sorted=False, out=(sims[start:stop], idx[start:stop]))
    return sims, idx


def _sparse_from_knn(weights: np.ndarray, idx: np.ndarray, n: int) -> sp.csr_matrix:
    """Directed kNN edges -> symmetric CSR (an edge kept if either end chose it; weight = the larger)."""
    rows = np.repeat(np.arange(n), idx.shape[1])
    w = sp.csr_matrix((weights.ravel().astype(np.float64), (rows, idx.ravel())), shape=(n, n))
    w = w.maximum(w.T).tocsr()
    w.eliminate_zeros()
    return w


def feature_affinity(features: Any, knn: int | None = DEFAULT_KNN, *, dense: bool = False) -> Graph:
    """``W = max(F F^T, 0)`` on L2-normalized per-pixel features, zero diagonal.

    ``knn=None`` keeps every positive edge (Deep Spectral Methods' dense graph, N^2 entries); an int
    keeps each node's ``knn`` most similar nodes, symmetrized. ``dense=True`` returns an ndarray.
    """
    x, (h, w) = feature_matrix(features)
    n = h * w
    if knn is None or knn >= n - 1:
        s = (x @ x.T).clamp_(min=0)
        s.fill_diagonal_(0)
        full = s.double().numpy()
        return full if dense else sp.csr_matrix(full)
    if knn < 1:
        raise ValueError(f"knn must be >= 1 or None, got {knn}")
    sims, idx = knn_indices(x, knn)
    graph = _sparse_from_knn(sims.clamp(min=0).numpy(), idx.numpy(), n)
    return graph.toarray() if dense else graph


def color_affinity(image: Any, shape: tuple[int, int], knn: int = DEFAULT_COLOR_KNN, *, weighting: str = "binary",
                   space: str = "lab", position_weight: float = 1.0, dense: bool = False) -> Graph:
    """kNN affinity in (colour, position) space of ``image`` downsampled to ``shape`` (the feature grid).

    Like the KNN-matting affinity Deep Spectral Methods adds: each pixel links to its ``knn`` nearest
    pixels in (Lab / 100, x, y / longer side * ``position_weight``); ``weighting="binary"`` gives
    those edges weight 1, ``"gaussian"`` exp(-d^2 / 2 sigma^2) with sigma the median neighbour distance.
    Symmetrized as the feature graph.
    """
    from scipy.spatial import cKDTree  # heavy

    pts = color_position_points(image, shape, space=space, position_weight=position_weight)
    n = pts.shape[0]
    k = min(knn, n - 1)
    if k < 1:
        raise ValueError(f"knn must be >= 1, got {knn}")
    dist, idx = cKDTree(pts).query(pts, k=k + 1)
    # drop each row's self match (normally column 0, but duplicate points may come first)
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    dist, idx = dist[keep].reshape(n, k), idx[keep].reshape(n, k)
    if weighting == "binary":
        weights = np.ones_like(dist)
    elif weighting == "gaussian":
        sigma = float(np.median(dist)) or 1.0
        weights = np.exp(-(dist ** 2) / (2 * sigma ** 2))
    else:
        raise ValueError(f"unknown weighting {weighting!r}; expected 'binary' or 'gaussian'")
    graph = _sparse_from_knn(weights, idx, n)
    return graph.toarray() if dense else graph


def build_affinity(features: Any, image: Any = None, *, knn: int | None = DEFAULT_KNN, lam: float = 0.0,
                   color_knn: int = DEFAULT_COLOR_KNN, color_weighting: str = "binary", space: str = "lab",
                   position_weight: float = 1.0, dense: bool = False) -> Graph:
    """``W = W_feat + lam * W_colour``: the feature graph plus, when ``lam > 0``, the image's
    colour/position kNN graph on the same h x w grid."""
    w_feat = feature_affinity(features, knn, dense=dense)
    if lam == 0:
        return w_feat
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if image is None:
        raise ValueError("lam > 0 needs the image for the colour/position affinity")
    shape = (int(features.shape[-2]), int(features.shape[-1]))
    w_col = color_affinity(image, shape, color_knn, weighting=color_weighting, space=space,
                           position_weight=position_weight, dense=dense)
    out = w_feat + lam * w_col
    return out if dense else sp.csr_matrix(out)


def degrees(w: Graph) -> np.ndarray:
    """Row sums of the affinity (node degrees), float64 [N]."""
    return np.asarray(w.sum(axis=1), dtype=np.float64).ravel()


def laplacian(w: Graph) -> Graph:
    """``L = D - W`` (same kind as ``w``: CSR or ndarray)."""
    d = degrees(w)
    if sp.issparse(w):
        return (sp.diags(d) - w).tocsr()
    return np.diag(d) - w
