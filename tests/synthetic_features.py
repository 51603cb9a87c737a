"""Synthetic pixel features with known structure, for the spectral tests and benchmarks/bench_spectral.py."""
from __future__ import annotations

import numpy as np
import torch


def planted_features(shape: tuple[int, int] = (48, 48), channels: int = 32, n_regions: int = 4, noise: float = 0.5,
                     seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Features [C, h, w] with planted regions (a random prototype per region + Gaussian noise) and the
    region map [h, w]: quadrants-like bands plus a central square when ``n_regions`` >= 4."""
    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, dtype=np.int64)
    if n_regions >= 2:
        labels[:, w // 2:] = 1
    if n_regions >= 3:
        labels[h // 2:, :] = 2
    if n_regions >= 4:
        labels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 3
    for r in range(4, n_regions):  # further regions: horizontal stripes at the top
        labels[(r - 3) * h // (2 * n_regions): (r - 3) * h // (2 * n_regions) + max(1, h // (4 * n_regions)), :] = r
    protos = rng.standard_normal((n_regions, channels))
    feats = protos[labels] + noise * rng.standard_normal((h, w, channels))
    return torch.from_numpy(feats.transpose(2, 0, 1).astype(np.float32)).contiguous(), labels


def smooth_features(shape: tuple[int, int] = (64, 64), channels: int = 64, sigma: float = 3.0,
                    seed: int = 0) -> torch.Tensor:
    """Gaussian random fields [C, h, w] (white noise blurred by ``sigma`` pixels): spatially coherent
    but without planted structure, for tuning solvers on data unlike the tests'."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((channels, *shape)).astype(np.float32)
    return torch.from_numpy(gaussian_filter(x, sigma=(0, sigma, sigma))).contiguous()
