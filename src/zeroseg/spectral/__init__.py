"""Spectral eigen-segments (SAZS / Deep Spectral Methods): affinity graphs over feature maps, their
smallest non-trivial generalized eigenvectors, and segments from those eigenvectors."""
from .eigen import (
                    SpectralResult,
                    dense_eigs,
                    eigen_segments,
                    kmeans,
                    kmeans_segments,
                    orient,
                    spectral_eigs,
                    threshold_segments,
)
from .features import (
                    callable_features,
                    color_features,
                    load_vit,
                    segmenter_features,
                    vit_features,
)
from .graph import build_affinity, color_affinity, degrees, feature_affinity, laplacian

__all__ = [
    "SpectralResult", "build_affinity", "callable_features", "color_affinity", "color_features", "degrees",
    "dense_eigs", "eigen_segments", "feature_affinity", "kmeans", "kmeans_segments", "laplacian", "load_vit",
    "orient", "segmenter_features", "spectral_eigs", "threshold_segments",
    "vit_features",
]
