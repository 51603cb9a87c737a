"""Spectral eigen-segments: the smallest non-trivial eigenvectors of ``L v = lambda D v`` and their
discretization (per-eigenvector thresholds or k-means), as in SAZS / Deep Spectral Methods.

The generalized problem is solved through the normalized affinity ``A = D^-1/2 W D^-1/2``:
``A u = (1 - lambda) u`` with ``v = D^-1/2 u``. The trivial eigenvector ``u0 ~ D^1/2 1`` (``v``
constant) is deflated out of ``A`` exactly (``A - 3 u0 u0^T`` sends it to -2, below every other
eigenvalue), so the solver returns only non-trivial vectors even when the graph has several
components. Eigenvectors come back D-orthonormal (``V D V^T = I``), eigenvalues ascending.
"""
from __future__ import annotations

import contextlib
import functools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .graph import DEFAULT_COLOR_KNN, DEFAULT_KNN, Graph, build_affinity, degrees

DEFAULT_TOL = 1e-6  # ARPACK's relative accuracy of the eigenvalues of A; subspace error ~ tol / gap
DEFAULT_NCV = 16  # Lanczos basis size; 11 (ARPACK's 2k+1) to 32 are within noise on smooth fields, 16 is safe
DENSE_BELOW = 200  # graphs with fewer nodes go to the dense solver: faster, and ARPACK needs k << N
DEFLATE = 3.0  # A - DEFLATE * u0 u0^T moves the trivial eigenvalue 1 to 1 - DEFLATE


@dataclass
class SpectralResult:
    """``eigenvalues`` [K] of ``L v = lambda D v`` (ascending, trivial 0 dropped); ``eigenvectors``
    [K, h, w] (D-orthonormal, positive side = minority of pixels); ``segments`` [h, w] int32."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    segments: np.ndarray
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


# -- the normalized problem ----------------------------------------------------------------------
def _normalize(w: Graph) -> tuple[Graph, np.ndarray, np.ndarray]:
    """-> (A = D^-1/2 W D^-1/2, D^-1/2 as a vector, unit trivial vector u0 = D^1/2 1 / |.|)."""
    d = degrees(w)
    # isolated nodes (all-zero or negative-only similarities) would divide by zero
    d = np.maximum(d, 1e-12 * max(float(d.max(initial=0.0)), 1e-300))
    dinv = 1.0 / np.sqrt(d)
    if sp.issparse(w):
        a = sp.csr_matrix(w.multiply(dinv[:, None]).multiply(dinv[None, :]))
    else:
        a = np.asarray(w, dtype=np.float64) * dinv[:, None] * dinv[None, :]
    u0 = np.sqrt(d)
    return a, dinv, u0 / np.linalg.norm(u0)


def orient(vectors: np.ndarray) -> np.ndarray:
    """Flip each row [K, ...] so its positive side is the minority of pixels; on a tie, so that the
    first pixel (top-left corner, usually background) is not positive."""
    v = np.array(vectors, copy=True)
    flat = v.reshape(v.shape[0], -1)
    for row in flat:
        pos, neg = int((row > 0).sum()), int((row < 0).sum())
        if pos > neg or (pos == neg and row[0] > 0):
            row *= -1
    return v


def _finish(mu: np.ndarray, u: np.ndarray, dinv: np.ndarray, k: int,
            shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of A (any order) -> the k largest as (lambda ascending, oriented v [k, ...])."""
    order = np.argsort(-mu)[:k]
    lam = np.clip(1.0 - mu[order], 0.0, 2.0)
    v = (u[:, order] * dinv[:, None]).T
    v = orient(v)
    if shape is not None:
        v = v.reshape(k, *shape)
    return lam, v


@functools.cache
def _blas_controller():
    """Scanning the loaded libraries costs ~1.5 ms: do it once, after scipy's BLAS is loaded."""
    from threadpoolctl import ThreadpoolController  # optional

    return ThreadpoolController()


def _single_thread_blas() -> contextlib.AbstractContextManager:
    """ARPACK/LOBPCG make many tiny BLAS calls; threaded BLAS only adds sync cost (10x on a busy
    2-core machine)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _init_block(init: Any, n: int, d_sqrt: np.ndarray) -> np.ndarray:
    """A previous solution ([K, h, w], [K, N] or [N, K] generalized eigenvectors) -> u-space block [N, K]."""
    x = np.asarray(init.detach().cpu() if isinstance(init, torch.Tensor) else init, dtype=np.float64)
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or n not in x.shape:
        raise ValueError(f"init must hold eigenvectors over {n} nodes, got shape {x.shape}")
    if x.shape[1] != n:
        x = x.T
    return (x * d_sqrt[None, :]).T


def spectral_eigs(w: Graph, k: int = 5, shape: tuple[int, int] | None = None, *, init: Any = None,
                  solver: str = "auto", tol: float = DEFAULT_TOL, ncv: int | None = DEFAULT_NCV,
                  maxiter: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest non-trivial generalized eigenpairs of ``L v = lambda D v`` of the affinity ``w``.

    Returns (eigenvalues [k] ascending, eigenvectors [k, h, w] with ``shape``, else [k, N]).
    ``tol`` is ARPACK's relative accuracy of the eigenvalues; LOBPCG gets ``sqrt(tol)`` as its residual
    tolerance (eigenvalue errors go as the residual squared). ``ncv``: ARPACK's Lanczos basis size.
    ``solver``: ``"arpack"`` (implicitly restarted Lanczos, ``scipy.sparse.linalg.eigsh``) or
    ``"lobpcg"`` (block method whose block starts at ``init``); ``"auto"`` is ARPACK, measured faster
    than LOBPCG here even when LOBPCG is warm-started. ``init`` (a previous solution on the same grid,
    e.g. the last video frame) seeds either solver (ARPACK starts from its span). Graphs under
    ``DENSE_BELOW`` nodes are solved densely.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, lobpcg  # heavy

    n = w.shape[0]
    if not 1 <= k < n - 1:
        raise ValueError(f"need 1 <= k < N - 1 eigenvectors, got k={k} for N={n}")
    if solver not in ("auto", "arpack", "lobpcg"):
        raise ValueError(f"unknown solver {solver!r}; expected 'auto', 'arpack' or 'lobpcg'")
    if n < DENSE_BELOW:
        return dense_eigs(w, k, shape)
    a, dinv, u0 = _normalize(w)
    a = sp.csr_matrix(a)
    rng = np.random.default_rng(seed)
    x0 = _init_block(init, n, 1.0 / dinv) if init is not None else None
    if solver == "auto":
        solver = "arpack"

    with _single_thread_blas():
        if solver == "lobpcg":
            extra = max(2, k // 2)  # a few guard vectors speed up the wanted ones
            block = rng.standard_normal((n, k + extra))
            if x0 is not None:
                block[:, : min(k, x0.shape[1])] = x0[:, :k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "did not reach tolerance": its best block is still returned
                mu, u = lobpcg(a, block, Y=u0[:, None], tol=np.sqrt(tol), maxiter=maxiter or 200, largest=True)
            return _finish(np.asarray(mu), np.asarray(u), dinv, k, shape)

        def matvec(x: np.ndarray) -> np.ndarray:
            x = x.ravel()
            return a @ x - DEFLATE * u0 * (u0 @ x)

        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = x0.sum(axis=1) + 1e-3 * rng.standard_normal(n) if x0 is not None else rng.standard_normal(n)
        v0 -= u0 * (u0 @ v0)
        ncv_ = None if ncv is None else min(n - 1, max(ncv, 2 * k + 1))
        try:
            mu, u = eigsh(op, k, which="LA", tol=tol, ncv=ncv_, v0=v0, maxiter=maxiter)
        except ArpackNoConvergence as e:
            if e.eigenvalues is not None and len(e.eigenvalues) >= k:
                mu, u = e.eigenvalues, e.eigenvectors
            else:  # rare: fall back to the block solver with more iterations
                return spectral_eigs(w, k, shape, init=init, solver="lobpcg", tol=tol,
                                     maxiter=max(maxiter or 0, 500), seed=seed)
    return _finish(np.asarray(mu), np.asarray(u), dinv, k, shape)


def dense_eigs(w: Graph, k: int = 5, shape: tuple[int, int] | None = None,
               dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the same eigenpairs as ``spectral_eigs`` from ``torch.linalg.eigh`` of the dense
    normalized affinity (O(N^3); for tests and the benchmark)."""
    a, dinv, u0 = _normalize(w)
    dense = torch.as_tensor(a.toarray() if sp.issparse(a) else a, dtype=dtype)
    u0_t = torch.as_tensor(u0, dtype=dtype)
    dense = dense - DEFLATE * torch.outer(u0_t, u0_t)
    mu, u = torch.linalg.eigh(dense)
    return _finish(mu[-k:].double().numpy(), u[:, -k:].double().numpy(), dinv, k, shape)


# -- discretization -------------------------------------------------------------------------------
def threshold_segments(eigenvectors: np.ndarray, n_segments: int = 2) -> np.ndarray:
    """Segments from signs: eigenvector i's positive side (not yet taken) becomes segment i + 1, using
    the first ``n_segments - 1`` eigenvectors; the rest is 0. ``n_segments=2``: the Fiedler bipartition
    (1 = the minority side, usually the foreground)."""
    v = np.asarray(eigenvectors)
    seg = np.zeros(v.shape[1:], dtype=np.int32)
    for i in range(min(len(v), n_segments - 1)):
        seg[(v[i] > 0) & (seg == 0)] = i + 1
    return seg


def kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100,
           tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding, best of ``n_init`` runs -> (labels [N], centres, inertia).

    A run stops when no label changes or the centres move less than ``tol`` times the data's mean
    per-dimension variance (squared), as scikit-learn does.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    n_clusters = min(n_clusters, n)
    rng = np.random.default_rng(seed)
    sq = (x * x).sum(1)
    stop_shift = tol * float(x.var(axis=0).mean())

    def distances(c: np.ndarray) -> np.ndarray:
        return sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]

    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        centres = _kmeanspp(x, sq, n_clusters, rng)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            dist = distances(centres)
            new = dist.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=n_clusters)
            # per-cluster sums via bincount (np.add.at is ~10x slower)
            sums = np.stack([np.bincount(labels, weights=col, minlength=n_clusters) for col in x.T], axis=1)
            empty = counts == 0
            moved = np.where(empty[:, None], centres, sums / np.maximum(counts, 1)[:, None])
            if empty.any():  # re-seed an empty cluster at the worst-fitted point
                far = np.argsort(-dist[np.arange(n), labels])[: int(empty.sum())]
                moved[empty] = x[far]
            shift = float(((moved - centres) ** 2).sum())
            centres = moved
            if shift <= stop_shift:
                break
        dist = distances(centres)
        labels = dist.argmin(1)  # labels that match the final centres
        inertia = float(np.maximum(dist[np.arange(n), labels], 0).sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centres, inertia)
    assert best is not None
    return best


def _kmeanspp(x: np.ndarray, sq: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    closest = np.maximum(sq - 2 * x @ centres[0] + centres[0] @ centres[0], 0)
    for _ in range(1, k):
        total = closest.sum()
        i = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[i])
        closest = np.minimum(closest, np.maximum(sq - 2 * x @ x[i] + x[i] @ x[i], 0))
    return np.stack(centres)


def kmeans_segments(eigenvectors: np.ndarray, n_segments: int, *, seed: int = 0) -> np.ndarray:
    """k-means on the per-pixel rows of the eigenvectors [K, h, w], each row scaled to unit length
    (Ng-Jordan-Weiss: removes the per-pixel degree scale) -> [h, w] int32, 0 = the largest segment."""
    v = np.asarray(eigenvectors, dtype=np.float64)
    rows = v.reshape(v.shape[0], -1).T
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    rows = rows / np.where(norms > 0, norms, 1.0)
    labels, _, _ = kmeans(rows, n_segments, seed=seed)
    counts = np.bincount(labels, minlength=n_segments)
    rank = np.empty(n_segments, dtype=np.int32)
    rank[np.argsort(-counts, kind="stable")] = np.arange(n_segments, dtype=np.int32)
    return rank[labels].reshape(v.shape[1:])


def eigen_segments(features: Any, image: Any = None, k: int = 5, n_segments: int | None = None,
                   method: str = "kmeans", lam: float = 0.0, knn: int | None = DEFAULT_KNN, seed: int = 0, *,
                   solver: str = "auto", init: Any = None, tol: float = DEFAULT_TOL,
                   color_knn: int = DEFAULT_COLOR_KNN, color_weighting: str = "binary") -> SpectralResult:
    """Features [C, h, w] (+ optional image for the colour/position term, weight ``lam``) -> the
    ``k`` smallest non-trivial eigenvectors and a segment map.

    ``method="kmeans"``: k-means on the (row-normalized) eigenvectors into ``n_segments`` (default
    k + 1); ``"threshold"``: each eigenvector's positive side in turn (``n_segments=2``: the Fiedler
    bipartition). ``image`` is used only when ``lam > 0``. ``init``: a previous ``eigenvectors`` on the
    same grid to warm-start the solver.
    """
    if method not in ("kmeans", "threshold"):
        raise ValueError(f"unknown method {method!r}; expected 'kmeans' or 'threshold'")
    start = time.perf_counter()
    shape = (int(features.shape[-2]), int(features.shape[-1]))
    w = build_affinity(features, image, knn=knn, lam=lam, color_knn=color_knn, color_weighting=color_weighting)
    t_graph = time.perf_counter()
    values, vectors = spectral_eigs(w, k, shape, init=init, solver=solver, tol=tol, seed=seed)
    t_eig = time.perf_counter()
    n_segments = n_segments or k + 1
    if method == "kmeans":
        segments = kmeans_segments(vectors, n_segments, seed=seed)
    else:
        segments = threshold_segments(vectors, n_segments)
    end = time.perf_counter()
    info = {"nodes": w.shape[0], "edges": int(w.nnz) // 2, "graph_s": t_graph - start, "eig_s": t_eig - t_graph,
            "segment_s": end - t_eig, "method": method, "knn": knn, "lam": lam}
    return SpectralResult(values, vectors.astype(np.float32), segments, seconds=end - start, info=info)
