"""Spectral eigen-segments on a 64 x 64 feature grid (4096 nodes), K = 5 eigenvectors.

Run: .venv/bin/python benchmarks/bench_spectral.py   (results: benchmarks/results/spectral.json)

Compares the sparse path (exact kNN graph + ARPACK Lanczos, what ``eigen_segments`` runs) with a dense
``torch.linalg.eigh`` of the same graph, in one run, and sweeps the solver settings on smooth random
fields (not the planted clusters the tests use) to justify the defaults. Timings use one torch/BLAS
thread: on this shared 2-core machine multi-threaded MKL/OpenBLAS calls stall behind other processes
(a 1024 x 1024 eigh went from 0.2 s to 13 s with 2 threads), which would make the comparison meaningless.
"""
from __future__ import annotations

import numpy as np
import torch
from common import median_seconds, tests_on_path, write_results

tests_on_path()  # the synthetic features are test helpers (tests/synthetic_features.py)
from synthetic_features import planted_features, smooth_features  # noqa: E402

from zeroseg.spectral import (
    degrees,
    dense_eigs,
    eigen_segments,
    feature_affinity,
    spectral_eigs,
)
from zeroseg.spectral.eigen import DEFAULT_NCV, DEFAULT_TOL
from zeroseg.spectral.graph import DEFAULT_KNN

K = 5
SHAPE = (64, 64)


def subspace_residual(v_it: np.ndarray, v_ref: np.ndarray, d: np.ndarray) -> float:
    vi = v_it.reshape(len(v_it), -1).T
    vr = v_ref.reshape(len(v_ref), -1).T
    return float(np.linalg.norm(np.sqrt(d)[:, None] * (vi - vr @ (vr.T @ (d[:, None] * vi)))))


def sparse_path(features: torch.Tensor, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    w = feature_affinity(features, kwargs.pop("knn", DEFAULT_KNN))
    return spectral_eigs(w, K, SHAPE, **kwargs)


def compare(name: str, features: torch.Tensor, repeat: int, dense_repeat: int) -> dict:
    w = feature_affinity(features)
    t_graph = median_seconds(lambda: feature_affinity(features), repeat)
    t_eig = median_seconds(lambda: spectral_eigs(w, K, SHAPE), repeat)
    t_total = median_seconds(lambda: sparse_path(features), repeat)
    t_segments = median_seconds(lambda: eigen_segments(features, k=K), repeat)
    lam, vecs = spectral_eigs(w, K, SHAPE)
    dense = w.toarray()
    out: list = []
    # the full eigh costs the same for K or K + 1 vectors; K + 1 gives the gap that makes the subspace defined
    t_dense = median_seconds(lambda: out.append(dense_eigs(dense, K + 1, SHAPE)), dense_repeat, warmup=0)
    lam_d, vecs_d = out[-1]
    gap = float(lam_d[K] - lam_d[K - 1])
    return {
        "features": name, "nodes": w.shape[0], "edges": int(w.nnz // 2),
        "sparse_graph_s": round(t_graph, 4), "sparse_eigs_s": round(t_eig, 4),
        "sparse_graph_plus_eigs_s": round(t_total, 4), "eigen_segments_kmeans_s": round(t_segments, 4),
        "dense_eigh_float64_s": round(t_dense, 3),
        "dense_over_sparse_total_ratio": round(t_dense / t_total, 1),
        "dense_over_sparse_eigs_ratio": round(t_dense / t_eig, 1),
        "max_eigenvalue_diff": float(np.abs(lam - lam_d[:K]).max()),
        "subspace_residual": subspace_residual(vecs, vecs_d[:K], degrees(w)),
        "eigenvalue_gap_k_k1": gap, "eigenvalues": [round(float(x), 6) for x in lam],
    }


def sweep(features: torch.Tensor, repeat: int) -> list[dict]:
    """knn x ncv x tol on smooth random fields: time of graph + eigs, and accuracy vs a tight solve."""
    rows = []
    for knn in (5, 10, 20):
        w = feature_affinity(features, knn)
        ref_lam, ref_vecs = spectral_eigs(w, K + 1, SHAPE, tol=1e-10, ncv=40)
        d = degrees(w)
        for ncv in (None, 16, 24, 32):
            for tol in (1e-5, 1e-6):
                t = median_seconds(lambda: spectral_eigs(w, K, SHAPE, tol=tol, ncv=ncv), repeat)
                lam, vecs = spectral_eigs(w, K, SHAPE, tol=tol, ncv=ncv)
                rows.append({"knn": knn, "ncv": ncv or 2 * K + 1, "tol": tol, "eigs_s": round(t, 4),
                             "edges": int(w.nnz // 2),
                             "subspace_residual": subspace_residual(vecs, ref_vecs[:K], d)})
        rows.append({"knn": knn, "graph_s": round(median_seconds(lambda: feature_affinity(features, knn), repeat), 4)})
    return rows


def warm_start(repeat: int) -> dict:
    """A second 'frame' (features + 5% noise): cold vs warm-started solvers."""
    f = smooth_features(SHAPE, channels=64, sigma=2.0, seed=1)
    _, prev = spectral_eigs(feature_affinity(f), K, SHAPE)
    f2 = f + 0.05 * f.std() * torch.randn(f.shape, generator=torch.Generator().manual_seed(2))
    w2 = feature_affinity(f2)
    return {
        "arpack_cold_s": round(median_seconds(lambda: spectral_eigs(w2, K, SHAPE), repeat), 4),
        "arpack_warm_s": round(median_seconds(lambda: spectral_eigs(w2, K, SHAPE, init=prev), repeat), 4),
        "lobpcg_cold_s": round(median_seconds(lambda: spectral_eigs(w2, K, SHAPE, solver="lobpcg"), repeat), 4),
        "lobpcg_warm_s": round(median_seconds(lambda: spectral_eigs(w2, K, SHAPE, solver="lobpcg", init=prev),
                                              repeat), 4),
    }


def main(repeat: int = 7, dense_repeat: int = 3) -> None:
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=1)
    except ImportError:
        limits = None
    cases = [
        ("smooth C=64 sigma=2", smooth_features(SHAPE, channels=64, sigma=2.0, seed=0)),
        ("smooth C=384 sigma=2", smooth_features(SHAPE, channels=384, sigma=2.0, seed=0)),
        ("planted 4 regions C=384 noise=0.7", planted_features(SHAPE, channels=384, n_regions=4, noise=0.7, seed=0)[0]),
    ]
    results = [compare(name, f, repeat, dense_repeat if i == 0 else 1) for i, (name, f) in enumerate(cases)]
    # the same two paths with two torch threads, sparse only (dense MKL eigh stalls, see above)
    torch.set_num_threads(2)
    two_threads = {name: round(median_seconds(lambda: sparse_path(f), repeat), 4) for name, f in cases}
    torch.set_num_threads(1)
    tuning = sweep(cases[0][1], repeat=5)
    warm = warm_start(repeat)
    if limits is not None:
        limits.restore_original_limits()
    write_results("spectral", {
        "task": f"K={K} non-trivial eigenvectors of L v = lambda D v, {SHAPE[0]}x{SHAPE[1]} grid (4096 nodes)",
        "threads": "1 torch thread, 1 BLAS thread (threadpoolctl) unless noted",
        "defaults": {"knn": DEFAULT_KNN, "solver": "arpack (eigsh, which=LA on the deflated normalized affinity)",
                     "ncv": DEFAULT_NCV, "tol": DEFAULT_TOL},
        "target_s": 0.2,
        "comparison": results,
        "sparse_graph_plus_eigs_2_torch_threads_s": two_threads,
        "tuning_smooth_C64": tuning,
        "warm_start_smooth_C64": warm,
    })


if __name__ == "__main__":
    main()
