"""Seen-class relay (ConSE over the trained vocabulary): the rule, its wiring in Segmenter, the
model file / ONNX metadata that carry it, and the calibration that chooses it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_recipe import dataset  # noqa: F401  (module fixture: a small synthetic benchmark)

from zeroseg import load_model
from zeroseg.cli import main
from zeroseg.data.dataset import SynthDataset
from zeroseg.models.loading import write_model_extra
from zeroseg.models.lseg import upsample_logits
from zeroseg.relay import BoxRelay, relay_logits, relay_similarity

SCALE = 1 / 0.07


def test_background_is_decided_by_the_direct_scores():
    torch.manual_seed(0)
    direct, vocabulary, sim = torch.randn(2, 4, 5, 6) * 3, torch.randn(2, 7, 5, 6) * 3, torch.rand(7, 4)
    for background in (0, 2):
        out = relay_logits(direct, vocabulary, sim, background, 0, SCALE)
        assert torch.equal(out.argmax(1) == background, direct.argmax(1) == background)
        assert out.argmax(1).eq(background).any() and out.argmax(1).ne(background).any()


def test_names_come_from_the_vocabulary_mixture():
    # labels [other, A, B]: the direct scores prefer B, the model is sure the pixel is vocabulary
    # entry 0, whose name is close to A's
    direct = torch.tensor([-5.0, 1.0, 3.0]).view(1, 3, 1, 1)
    vocabulary = torch.tensor([10.0, 0.0]).view(1, 2, 1, 1)
    sim = torch.tensor([[0.0, 0.9, 0.2], [0.0, 0.1, 0.8]])
    out = relay_logits(direct, vocabulary, sim, 0, 0, SCALE).flatten()
    q = torch.tensor([10.0, 0.0]).softmax(0)
    s_a, s_b = q[0] * 0.9 + q[1] * 0.1, q[0] * 0.2 + q[1] * 0.8
    assert torch.allclose(out, torch.stack([torch.tensor(-8.0), torch.tensor(0.0), SCALE * (s_b - s_a)]))
    assert int(out.argmax()) == 1


def test_top_k_keeps_only_the_most_likely_vocabulary_entries():
    direct = torch.tensor([0.0, 1.0, 1.0]).view(1, 3, 1, 1)
    vocabulary = torch.tensor([2.0, 1.9, 1.9]).view(1, 3, 1, 1)  # entry 0 alone is the most likely
    sim = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # 0 -> A; 1, 2 -> B
    assert int(relay_logits(direct, vocabulary, sim, 0, 0, SCALE).argmax()) == 2  # mixture of all: B
    assert int(relay_logits(direct, vocabulary, sim, 0, 3, SCALE).argmax()) == 2  # k = vocabulary size: all
    assert int(relay_logits(direct, vocabulary, sim, 0, 1, SCALE).argmax()) == 1  # top-1: A


def test_binary_and_background_free_queries():
    torch.manual_seed(1)
    direct, vocabulary, sim = torch.randn(1, 2, 4, 4) * 3, torch.randn(1, 5, 4, 4), torch.rand(5, 2)
    assert torch.equal(relay_logits(direct, vocabulary, sim, 0, 0, SCALE).argmax(1), direct.argmax(1))
    out = relay_logits(direct, vocabulary, sim, None, 0, SCALE)  # no background: every pixel is named
    scores = torch.einsum("bvhw,vc->bchw", vocabulary.softmax(1), sim)
    assert torch.allclose(out, SCALE * (scores - scores.amax(1, keepdim=True)))


def test_box_relay_keeps_the_detectors_objectness_and_names_through_the_vocabulary():
    torch.manual_seed(3)
    vocabulary, labels = torch.randn(6, 8), torch.randn(3, 8)
    relay = BoxRelay.from_text(vocabulary, labels, top_k=0, scale=10.0)
    direct, vocabulary_logits = torch.randn(5, 4) * 3, torch.randn(5, 6) * 3  # column 0: background
    out = relay(direct, vocabulary_logits)
    sim = F.normalize(vocabulary, dim=-1) @ F.normalize(labels, dim=-1).T
    scores = vocabulary_logits.softmax(1) @ sim  # by hand: the similarity of the vocabulary mixture
    assert torch.allclose(out[:, 1:], 10.0 * (scores - scores.amax(1, keepdim=True)), atol=1e-6)
    assert torch.allclose(out[:, 0], direct[:, 0] - direct[:, 1:].amax(1))
    # one asked label: the box scores (softmax over [background, label]) are the detector's own
    single = BoxRelay.from_text(vocabulary, labels[:1], top_k=2, scale=10.0)
    assert torch.allclose(single(direct[:, :2], vocabulary_logits).softmax(1), direct[:, :2].softmax(1), atol=1e-6)


def test_hubness_lowers_labels_near_many_trained_names():
    # trained names: three animals and a tool; asked: "goat" (an animal, near all three) and
    # "axe" (near the tool only). A pixel of an unknown object the model finds a bit like each.
    vocabulary = torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [1.0, 0.0, 0.1], [0.0, 0.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.0, 1.0]])
    plain = relay_similarity(vocabulary, labels)
    assert torch.allclose(plain, F.normalize(vocabulary, dim=-1) @ F.normalize(labels, dim=-1).T)
    for hubness, k in ((0.5, 2), (1.0, 10)):  # 10 > vocabulary: all four are the neighbours
        got = relay_similarity(vocabulary, labels, hubness, neighbours=k)
        want = plain - hubness * plain.topk(min(k, 4), dim=0).values.mean(0)
        assert torch.allclose(got, want)
    weights = torch.tensor([0.25, 0.25, 0.2, 0.3])  # what the relay mixes: its softmax over the trained names
    assert int((weights @ plain).argmax()) == 0  # the hub wins without the correction
    assert int((weights @ relay_similarity(vocabulary, labels, 1.0, neighbours=3)).argmax()) == 1
    box = BoxRelay.from_text(vocabulary, labels, top_k=2, scale=10.0, hubness=0.5)
    assert torch.allclose(box.similarity, relay_similarity(vocabulary, labels, 0.5))


@pytest.fixture()
def relay_model(tiny_model_file, tmp_path):
    path = tmp_path / "relay.safetensors"
    write_model_extra(tiny_model_file, path, {"labels": ["other", "red square", "green disc", "cat"],
                                              "relay_top_k": 2})
    return path


def test_segmenter_relays_through_the_model_files_vocabulary(relay_model, tiny_model_file):
    seg = load_model(relay_model)
    assert seg.relay_vocabulary == ["red square", "green disc", "cat"] and seg.relay_top_k == 2
    assert seg.background == "other"
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    labels = ["other", "dog", "blue bar"]
    got = seg.segment(image, labels)
    # the same pass by hand: direct + vocabulary logits at the network's half resolution, relay,
    # x2 upsampling, crop of the stride padding, resize to the image, softmax
    x = seg.prepare(image)
    h, w = x.shape[-2:]
    text = seg.text_embeddings(labels)
    with torch.no_grad():
        half = seg.model(seg._pad(x), torch.cat([text, seg.text_embeddings(seg.relay_vocabulary)]), upsample=False)
    sim = F.normalize(seg.text_embeddings(seg.relay_vocabulary), dim=-1) @ F.normalize(text, dim=-1).T
    relayed = upsample_logits(relay_logits(half[:, :3], half[:, 3:], sim, 0, 2, seg.config.logit_scale))[..., :h, :w]
    want = F.interpolate(relayed, size=(40, 56), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
    assert np.allclose(got.probs, want, atol=1e-5)
    seg.relay_hubness = 0.75  # the hubness correction lowers labels in the relay's similarity
    hub = relay_similarity(seg.text_embeddings(seg.relay_vocabulary), text, 0.75)
    relayed = upsample_logits(relay_logits(half[:, :3], half[:, 3:], hub, 0, 2, seg.config.logit_scale))[..., :h, :w]
    want = F.interpolate(relayed, size=(40, 56), mode="bilinear", align_corners=False)[0].softmax(0).numpy()
    assert np.allclose(seg.segment(image, labels).probs, want, atol=1e-5)
    seg.relay_top_k = 0  # off: the plain model
    plain = load_model(tiny_model_file)
    assert np.array_equal(seg.segment(image, labels).probs, plain.segment(image, labels).probs)
    assert not np.allclose(seg.segment(image, labels).probs, got.probs)


@pytest.mark.parametrize("arch_option", [0, 1])  # 1: bottleneck blocks, which mix the asked labels' logits
def test_relay_label_maps_match_segment_for_every_setting(relay_model, arch_option):
    seg = load_model(relay_model)
    if arch_option:
        from zeroseg.models.blocks import SpatialRegularization

        torch.manual_seed(2)
        seg.model.spatial_reg = SpatialRegularization(arch_option, 3).eval()
        with torch.no_grad():  # a strong kernel: the max over labels then changes decisions
            seg.model.spatial_reg.block.conv.weight.normal_(0, 1.0)
    image = np.random.default_rng(4).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    labels = ["other", "dog", "blue bar", "red disc"]
    settings = [(0, 0.0), (1, 0.0), (2, 0.75), (3, 0.5), (3, 0.0)]
    seg.label_offsets = {"other": -0.5}
    maps = seg.relay_label_maps(image, labels, settings)
    for (top_k, hubness), label_map in zip(settings, maps):
        seg.relay_top_k, seg.relay_hubness = top_k, hubness
        assert np.array_equal(label_map, seg.segment(image, labels).label_map), (top_k, hubness)
    assert len({m.tobytes() for m in maps}) > 1  # the settings do decide differently here


def test_cli_relay_switch(relay_model, tiny_model_file, sample_images, tmp_path, capsys):
    image = sample_images / "noise.png"
    assert main(["segment", str(image), "--labels", "other,dog,blue bar", "--model", str(relay_model),
                 "--relay", "0", "--out", str(tmp_path / "off")]) == 0
    assert main(["segment", str(image), "--labels", "other,dog,blue bar", "--model", str(tiny_model_file),
                 "--out", str(tmp_path / "plain")]) == 0
    name = image.stem + ".png"
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "off" / name)), np.asarray(Image.open(tmp_path / "plain" / name)))
    capsys.readouterr()
    rc = main(["segment", str(image), "--labels", "other,dog", "--model", str(tiny_model_file), "--relay", "3",
               "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--relay needs" in err[0]


def test_onnx_export_carries_the_relay(relay_model, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx runtime is an optional dependency (CI installs it)")
    from zeroseg.api import load_onnx_model

    hub_model = tmp_path / "hub.safetensors"
    write_model_extra(relay_model, hub_model, {"relay_hubness": 0.5})
    assert main(["export", str(hub_model), str(tmp_path / "m.onnx")]) == 0
    onnx_seg, seg = load_onnx_model(tmp_path / "m.onnx"), load_model(hub_model)
    assert seg.relay_hubness == 0.5 and load_model(relay_model).relay_hubness == 0.0  # files without it: off
    assert (onnx_seg.relay_vocabulary, onnx_seg.relay_top_k, onnx_seg.background, onnx_seg.relay_hubness) == \
        (seg.relay_vocabulary, seg.relay_top_k, seg.background, seg.relay_hubness)
    image = np.random.default_rng(2).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    labels = ["other", "dog", "blue bar"]
    assert np.allclose(onnx_seg.segment(image, labels).probs, seg.segment(image, labels).probs, atol=1e-4)


class RelaySensitiveSegmenter:
    """Names the val discs right in the first ``quality[setting]`` of their rows; by default only
    with ``top_k == 2`` (at any hubness), and calls everything else "other"."""

    relay_vocabulary = ["red square", "blue bar", "yellow star"]

    def __init__(self, data: SynthDataset, quality: dict | None = None):
        self.masks = {data.load(i)[0].tobytes(): data.load(i)[1] for i in range(len(data))}
        self.relay_top_k, self.relay_hubness = 7, 0.25
        self.quality = quality or {}
        self.passes = 0

    def right(self, top_k: int, hubness: float) -> float:
        return self.quality.get((top_k, hubness), 1.0 if top_k == 2 and not self.quality else 0.0)

    def relay_label_maps(self, image, labels, settings):
        self.passes += 1
        mask = self.masks[np.asarray(image).tobytes()]
        assert labels == ["other", "green disc"]
        maps = []
        for top_k, hubness in settings:
            named = (mask == 2)
            named[int(self.right(top_k, hubness) * mask.shape[0]):] = False
            maps.append(named.astype(np.int32))
        return maps


def test_relay_top_k_is_chosen_on_calibration_classes(dataset):  # noqa: F811
    from zeroseg.eval.calibration import choose_relay

    seg = RelaySensitiveSegmenter(SynthDataset(dataset, "val"))
    result = choose_relay(seg, dataset, ["green disc"], top_ks=(0, 2, 5), progress=False)
    assert result["top_k"] == 2 and result["miou_calibration"] == 100.0
    assert [r["top_k"] for r in result["table"]] == [0, 2, 3]  # 5 > vocabulary: capped; the whole one is tried
    assert result["table"][0]["miou_calibration"] == 0.0 and seg.relay_top_k == 7  # unchanged
    assert seg.passes == result["num_images"] > 0  # one pass per image for all settings


def test_relay_hubness_is_chosen_on_calibration_classes(dataset):  # noqa: F811
    from zeroseg.errors import ZerosegError
    from zeroseg.eval.calibration import choose_relay_hubness

    seg = RelaySensitiveSegmenter(SynthDataset(dataset, "val"), quality={(2, 0.5): 1.0})
    seg.relay_top_k = 2
    result = choose_relay_hubness(seg, dataset, ["green disc"], hubness=(0.0, 0.5, 1.0), progress=False)
    assert result["hubness"] == 0.5 and result["miou_calibration"] == 100.0 and result["top_k"] == 2
    assert [(r["hubness"], r["miou_calibration"]) for r in result["table"]] == [(0.0, 0.0), (0.5, 100.0), (1.0, 0.0)]
    assert seg.relay_hubness == 0.25  # unchanged
    seg.relay_top_k = 0
    with pytest.raises(ZerosegError, match="switch the relay on"):
        choose_relay_hubness(seg, dataset, ["green disc"], progress=False)


def test_relay_settings_make_both_choices_in_one_pass(dataset):  # noqa: F811
    from zeroseg.eval.calibration import choose_relay_settings

    # without the correction top-2 is best (0.5 of the rows); with it, top-3 would be better
    # still, but the rule picks top_k first (at hubness 0) and then the correction at that top_k
    quality = {(2, 0.0): 0.5, (2, 0.5): 0.75, (2, 1.0): 0.25, (3, 0.0): 0.25, (3, 0.5): 1.0}
    seg = RelaySensitiveSegmenter(SynthDataset(dataset, "val"), quality=quality)
    relay, hub = choose_relay_settings(seg, dataset, ["green disc"], top_ks=(0, 2), hubness=(0.0, 0.5, 1.0),
                                       progress=False)
    assert relay["top_k"] == 2 and [r["top_k"] for r in relay["table"]] == [0, 2, 3]
    assert hub["top_k"] == 2 and hub["hubness"] == 0.5 and [r["hubness"] for r in hub["table"]] == [0.0, 0.5, 1.0]
    mious = [r["miou_calibration"] for r in hub["table"]]
    assert mious[0] == relay["miou_calibration"] and mious[2] < mious[0] < mious[1] < 100.0
    assert seg.passes == relay["num_images"] == hub["num_images"] > 0  # one pass for both choices
    seg = RelaySensitiveSegmenter(SynthDataset(dataset, "val"), quality={(3, 0.5): 1.0})
    relay, hub = choose_relay_settings(seg, dataset, ["green disc"], top_ks=(0, 2), progress=False)
    assert relay["top_k"] == 0 and hub is None  # all tie at hubness 0: off wins, and no correction is chosen
