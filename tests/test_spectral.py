"""zeroseg.spectral: affinity graphs, iterative vs dense eigenvectors, segments, feature sources."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import TINY_VIT
from synthetic_features import planted_features, smooth_features

from zeroseg.errors import ZerosegError
from zeroseg.spectral import (
    SpectralResult,
    build_affinity,
    callable_features,
    color_affinity,
    color_features,
    degrees,
    dense_eigs,
    eigen_segments,
    feature_affinity,
    kmeans,
    laplacian,
    load_vit,
    orient,
    segmenter_features,
    spectral_eigs,
    threshold_segments,
    vit_features,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Dense eigh/matmul on a busy 2-core machine is 10-50x slower with 2 threads; tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert-Arabie ARI from the contingency table (1 = identical partitions, ~0 = chance)."""
    a, b = np.unique(np.ravel(a), return_inverse=True)[1], np.unique(np.ravel(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / pairs(np.array([a.size]))
    maximum = (rows + cols) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def subspace_residual(v_it: np.ndarray, v_ref: np.ndarray, d: np.ndarray) -> float:
    """|| D^1/2 (V_it - V_ref V_ref^T D V_it) ||_F: zero when V_it's span lies in V_ref's (both D-orthonormal)."""
    vi = v_it.reshape(len(v_it), -1).T.astype(np.float64)
    vr = v_ref.reshape(len(v_ref), -1).T.astype(np.float64)
    proj = vr @ (vr.T @ (d[:, None] * vi))
    return float(np.linalg.norm(np.sqrt(d)[:, None] * (vi - proj)))


def two_colour_image(shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A red square on a green background (uint8 [H, W, 3]) and its mask."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    mask[h // 4: h // 4 + h // 3, w // 3: w // 3 + w // 3] = True
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[~mask] = (40, 160, 50)
    img[mask] = (200, 30, 30)
    return img, mask


# -- k-means and ARI helpers ---------------------------------------------------------------------
def test_adjusted_rand_index_helper():
    x = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(x, x) == 1.0
    assert adjusted_rand_index(x, 5 - x) == 1.0  # relabelled
    assert adjusted_rand_index(x, [0, 1, 0, 1, 0, 1]) < 0.1


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [5, 5], [0, 6]])
    truth = np.repeat(np.arange(3), 50)
    x = centres[truth] + 0.3 * rng.standard_normal((150, 2))
    labels, found, inertia = kmeans(x, 3, seed=3)
    assert adjusted_rand_index(labels, truth) == 1.0 and found.shape == (3, 2) and inertia > 0
    assert np.array_equal(kmeans(x, 3, seed=3)[0], labels)


# -- graph -----------------------------------------------------------------------------------------
def test_feature_graph_is_symmetric_sparse_knn_and_matches_dense_definition():
    feats, _ = planted_features((16, 16), channels=8, n_regions=3, noise=1.0, seed=2)
    w = feature_affinity(feats, knn=6)
    assert sp.isspmatrix_csr(w) and w.shape == (256, 256)
    assert abs(w - w.T).max() == 0 and w.diagonal().max() == 0 and w.min() >= 0
    assert np.diff(w.indptr).min() >= 1  # kNN + symmetrization: nobody is isolated here
    np.testing.assert_array_equal(feature_affinity(feats, knn=6, dense=True), w.toarray())

    x = torch.nn.functional.normalize(feats.reshape(8, -1).T, dim=1).double().numpy()
    full = np.maximum(x @ x.T, 0)
    np.fill_diagonal(full, 0)
    np.testing.assert_allclose(feature_affinity(feats, knn=None, dense=True), full, atol=1e-6)
    # every kNN edge carries the full graph's weight, and each row keeps its 6 strongest
    rows, cols = w.nonzero()
    np.testing.assert_allclose(np.asarray(w[rows, cols]).ravel(), full[rows, cols], atol=1e-6)
    for i in range(0, 256, 37):
        top = np.sort(full[i])[-6:]
        assert np.sort(w.toarray()[i])[-6:] == pytest.approx(top, abs=1e-6)
    # numpy input is the same graph; Laplacian rows sum to zero
    assert abs(feature_affinity(feats.numpy(), knn=6) - w).max() < 1e-12
    lap = laplacian(w)
    assert np.abs(np.asarray(lap.sum(axis=1))).max() < 1e-9
    np.testing.assert_allclose(lap.diagonal(), degrees(w))


def test_color_affinity_binary_and_gaussian():
    img, _ = two_colour_image((40, 40))
    wb = color_affinity(img, (20, 20), knn=8)
    assert wb.shape == (400, 400) and abs(wb - wb.T).max() == 0 and wb.diagonal().max() == 0
    assert set(np.unique(wb.data)) == {1.0} and np.diff(wb.indptr).min() >= 8
    wg = color_affinity(img, (20, 20), knn=8, weighting="gaussian")
    assert abs(wg - wg.T).max() == 0 and 0 < wg.data.min() and wg.data.max() <= 1
    feats = torch.randn(4, 20, 20)
    both = build_affinity(feats, img, knn=5, lam=2.5, color_knn=8)
    expected = feature_affinity(feats, knn=5) + 2.5 * wb
    assert abs(both - expected).max() < 1e-12
    with pytest.raises(ValueError):
        build_affinity(feats, None, lam=1.0)


# -- eigenvectors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["planted", "smooth"])
def test_iterative_eigenvectors_match_dense_subspace(kind):
    if kind == "planted":
        feats, _ = planted_features((32, 32), channels=16, n_regions=4, noise=0.6, seed=4)
        k = 3  # 4 regions: 3 non-trivial near-zero eigenvalues, then a gap
    else:
        feats = smooth_features((32, 32), channels=32, sigma=2.0, seed=5)
        k = 5
    w = feature_affinity(feats)
    d = degrees(w)
    lam, vecs = spectral_eigs(w, k, (32, 32))
    lam_d, vecs_d = dense_eigs(w, k + 1, (32, 32))
    assert lam_d[k] - lam_d[k - 1] > 1e-3  # the k-dimensional subspace is well defined
    assert vecs.shape == (k, 32, 32) and np.all(np.diff(lam) >= -1e-12)
    np.testing.assert_allclose(lam, lam_d[:k], atol=1e-6)
    assert subspace_residual(vecs, vecs_d[:k], d) < 1e-3
    # D-orthonormal, D-orthogonal to the constant vector (the trivial one is gone)
    flat = vecs.reshape(k, -1)
    np.testing.assert_allclose(flat @ (d[:, None] * flat.T), np.eye(k), atol=1e-6)
    assert np.abs(flat @ d).max() < 1e-6 * np.sqrt(d.sum())
    # generalized eigen-equation L v = lambda D v
    lap = laplacian(w)
    for i in range(k):
        assert np.linalg.norm(lap @ flat[i] - lam[i] * d * flat[i]) < 1e-4
    # LOBPCG, and a warm start from a previous solution, land on the same subspace
    lam_l, vecs_l = spectral_eigs(w, k, (32, 32), solver="lobpcg", tol=1e-10)
    np.testing.assert_allclose(lam_l, lam_d[:k], atol=1e-5)
    assert subspace_residual(vecs_l, vecs_d[:k], d) < 1e-3
    for solver in ("arpack", "lobpcg"):
        lam_w, vecs_w = spectral_eigs(w, k, (32, 32), init=vecs, solver=solver, tol=1e-10)
        assert subspace_residual(vecs_w, vecs_d[:k], d) < 1e-3


def test_sign_convention_positive_side_is_minority():
    feats = smooth_features((32, 32), channels=16, sigma=2.0, seed=6)
    _, vecs = spectral_eigs(feature_affinity(feats), 5, (32, 32))
    for v in vecs:
        assert (v > 0).sum() <= (v < 0).sum()
    np.testing.assert_array_equal(orient(-vecs), vecs)
    tie = np.array([[1.0, -1.0, 2.0, -2.0]])
    assert orient(tie)[0, 0] < 0  # a tie puts the first pixel on the negative side


def test_threshold_segments_recover_two_regions():
    truth = np.zeros((32, 32), dtype=np.int64)  # region 1, a central square, is the minority
    truth[10:22, 8:20] = 1
    rng = np.random.default_rng(7)
    protos = rng.standard_normal((2, 16))
    feats = torch.from_numpy((protos[truth] + 0.6 * rng.standard_normal((32, 32, 16))).transpose(2, 0, 1)).float()
    res = eigen_segments(feats, k=2, n_segments=2, method="threshold")
    # foreground = the positive (minority) side = segment 1; a few noisy pixels may link across
    assert (res.segments == truth).mean() >= 0.98 and adjusted_rand_index(res.segments, truth) >= 0.9
    np.testing.assert_array_equal(threshold_segments(res.eigenvectors, 2), res.segments)


@pytest.mark.parametrize("n_regions,size", [(4, 48), (3, 32)])
def test_kmeans_segments_recover_planted_clusters(n_regions, size):
    feats, truth = planted_features((size, size), channels=24, n_regions=n_regions, noise=0.7, seed=n_regions)
    res = eigen_segments(feats, k=n_regions - 1, n_segments=n_regions, method="kmeans", seed=0)
    assert isinstance(res, SpectralResult)
    assert res.eigenvectors.shape == (n_regions - 1, size, size) and res.eigenvalues.shape == (n_regions - 1,)
    assert res.segments.shape == (size, size) and res.segments.dtype == np.int32 and res.seconds > 0
    assert adjusted_rand_index(res.segments, truth) >= 0.9
    # with more eigenvectors than needed (the default k=5) it still finds them
    res5 = eigen_segments(feats, n_segments=n_regions)
    assert res5.eigenvectors.shape[0] == 5 and adjusted_rand_index(res5.segments, truth) >= 0.9
    # seeded: the same call gives the same map
    np.testing.assert_array_equal(eigen_segments(feats, k=n_regions - 1, n_segments=n_regions).segments, res.segments)


def test_colour_affinity_separates_regions_the_features_cannot():
    # A = left half, B = top right, C = bottom right; B and C share a feature prototype, not a colour
    truth = np.zeros((32, 32), dtype=np.int64)
    truth[:16, 16:] = 1
    truth[16:, 16:] = 2
    rng = np.random.default_rng(8)
    protos = rng.standard_normal((2, 16))
    feats = (protos[np.minimum(truth, 1)] + 0.4 * rng.standard_normal((32, 32, 16))).transpose(2, 0, 1)
    colours = np.array([[40, 60, 200], [200, 30, 30], [40, 170, 50]], dtype=np.uint8)
    img = colours[np.kron(truth, np.ones((2, 2), dtype=np.int64))]  # 64 x 64, downsampled inside
    plain = eigen_segments(feats, k=2, n_segments=3)
    assert adjusted_rand_index(plain.segments, truth) < 0.8
    for weighting in ("binary", "gaussian"):
        res = eigen_segments(feats, img, k=2, n_segments=3, lam=10.0, color_weighting=weighting)
        assert adjusted_rand_index(res.segments, truth) >= 0.9, weighting
        assert res.info["lam"] == 10.0


# -- feature sources ------------------------------------------------------------------------------
def test_color_features_segment_without_a_network():
    img, mask = two_colour_image((48, 48))
    feats = color_features(img, (24, 24))
    assert feats.shape == (5, 24, 24) and torch.allclose(feats.mean(dim=(1, 2)), torch.zeros(5), atol=1e-5)
    res = eigen_segments(feats, k=1, n_segments=2, method="threshold")
    small = mask.reshape(24, 2, 24, 2).mean(axis=(1, 3)) > 0.5
    assert adjusted_rand_index(res.segments, small) >= 0.9


def test_callable_and_segmenter_features():
    from zeroseg.api import Segmenter
    from zeroseg.models.registry import create_model
    from zeroseg.text.base import TextEncoder

    class NoText(TextEncoder):
        name, dim = "none", 384

        def embed_texts(self, texts):
            return torch.ones(len(texts), self.dim)

    out = callable_features(lambda x: x[None], torch.ones(3, 4, 5))
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32

    torch.manual_seed(0)
    seg = Segmenter(create_model(dict(TINY_VIT)).eval(), NoText())
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    feats = segmenter_features(seg, img, short_side=0)
    assert feats.shape == (16, 25, 35)
    x = seg.normalize(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    stride = seg.model.stride
    x = torch.nn.functional.pad(x, (0, (-70) % stride, 0, (-50) % stride))
    with torch.no_grad():
        ref = seg.model.decoder_features(x)[0, :, :25, :35]
    torch.testing.assert_close(feats, ref)
    res = eigen_segments(feats, k=3)
    assert res.segments.shape == (25, 35)
    assert segmenter_features(seg, img).shape == (16, 32, 45)  # short side -> input_size 64: 64 x 90


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    """A randomly initialised 2-block ViT-S/16, saved as DINO would (timm names)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, num_classes=0).eval()
    d = tmp_path_factory.mktemp("vit")
    torch.save(model.state_dict(), d / "dino_vits16.pth")
    return model, d


def _reference_tokens_and_keys(model, x):
    with torch.no_grad():
        tokens = model.forward_features(x)[0, 1:]
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for block in model.blocks[:-1]:
            h = block(h)
        qkv = model.blocks[-1].attn.qkv(model.blocks[-1].norm1(h))[0, 1:]
    dim = tokens.shape[-1]
    return tokens, qkv[:, dim:2 * dim]


def test_vit_loader_local_file_any_size_tokens_and_keys(tiny_dino):
    from zeroseg.spectral.features import IMAGENET_MEAN, IMAGENET_STD

    ref_model, d = tiny_dino
    img = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref_model_dyn = load_vit(d / "dino_vits16.pth", "vit_small_patch16_224", depth=2)
    tokens, keys = _reference_tokens_and_keys(ref_model_dyn, x)
    for model in (ref_model_dyn, load_vit(d / "dino_vits16.pth")):  # named, and read off the state dict
        f = vit_features(model, img)
        assert f.shape == (384, 4, 6)  # 64 x 96 input: a 4 x 6 patch grid (224-trained position embeddings resized)
        torch.testing.assert_close(f, tokens.T.reshape(384, 4, 6), atol=1e-4, rtol=1e-4)
        k = vit_features(model, img, which="keys")
        torch.testing.assert_close(k, keys.T.reshape(384, 4, 6), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(vit_features(model, x, normalized=True), f)
    # a size that is not a multiple of the patch is resized to the nearest one
    assert vit_features(ref_model_dyn, img[:70 - 6, :100 - 4]).shape == (384, 4, 6)
    assert vit_features(ref_model_dyn, np.zeros((70, 100, 3), np.uint8)).shape == (384, 4, 6)
    assert vit_features(ref_model_dyn, img, short_side=128).shape == (384, 8, 12)
    # the weights are the saved ones
    for name, p in ref_model.state_dict().items():
        torch.testing.assert_close(ref_model_dyn.state_dict()[name], p)


def test_vit_loader_prefixed_and_safetensors(tiny_dino, tmp_path):
    from safetensors.torch import save_file

    model, d = tiny_dino
    sd = model.state_dict()
    img = np.random.default_rng(2).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    expected = vit_features(load_vit(d / "dino_vits16.pth"), img)
    teacher = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "head.mlp.0.weight": torch.zeros(8, 384)},
               "student": {f"module.backbone.{k}": v for k, v in sd.items()}, "epoch": torch.tensor(3)}
    torch.save(teacher, tmp_path / "full.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("full.pth", "ddp.pth", "w.safetensors"):
        torch.testing.assert_close(vit_features(load_vit(tmp_path / name), img), expected)
    res = eigen_segments(vit_features(load_vit(tmp_path / "ddp.pth"), img, which="keys"), k=2)
    assert res.segments.shape == (2, 3)


def test_vit_loader_bad_files_raise_one_line_zeroseg_errors(tiny_dino, tmp_path):
    _, d = tiny_dino
    good = (d / "dino_vits16.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    cases = [(tmp_path / "missing.pth", {}), (tmp_path, {}), (tmp_path / "truncated.pth", {}),
             (tmp_path / "text.pth", {}), (tmp_path / "empty.safetensors", {}), (tmp_path / "other.pth", {}),
             (d / "dino_vits16.pth", {"model_name": "vit_base_patch16_224", "depth": 2}),
             (d / "dino_vits16.pth", {"model_name": "vit_small_patch16_224"})]  # 12 blocks wanted, 2 saved
    for path, kwargs in cases:
        with pytest.raises(ZerosegError) as err:
            load_vit(path, **kwargs)
        assert "\n" not in str(err.value) and str(err.value), (path, kwargs)
