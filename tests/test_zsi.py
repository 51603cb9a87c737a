"""ZSI: semantic heads, BA-RPN, synchronized background, files, training, API, CLI, evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import SEEN, UNSEEN, make_dataset

from zeroseg.cli import main
from zeroseg.errors import ZerosegError
from zeroseg.models.registry import list_models, list_weights
from zeroseg.models.zsi import (
    BackgroundAwareRPNHead,
    SemanticBoxPredictor,
    SemanticMaskPredictor,
    create_plain_maskrcnn,
    create_zsi_model,
    load_zsi_model,
    save_zsi_model,
)
from zeroseg.models.zsi.model import _configs
from zeroseg.text.random import RandomTextEncoder

# Small enough to train for a few steps in a test: 64 px inputs, 16-channel FPN, 32-d text space.
TINY = {"backbone": "resnet10t", "fpn_channels": 16, "representation_size": 32, "mask_layers": [16, 16],
        "embed_dim": 32, "min_size": 64, "max_size": 128, "train_min_sizes": None,
        "anchor_sizes": [8, 16, 32, 64, 128], "rpn_pre_nms_top_n": [200, 100], "rpn_post_nms_top_n": [100, 50],
        "box_batch_size_per_image": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def unit_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def square_target(size: int = 64, label: int = 1) -> dict[str, torch.Tensor]:
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[0, 10:40, 20:50] = 1
    return {"boxes": torch.tensor([[20.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([label]), "masks": masks}


# ----------------------------------------------------------------------------- parts
def test_box_predictor_scores_against_the_embeddings_it_is_given():
    torch.manual_seed(0)
    head = SemanticBoxPredictor(24, 8)
    x = torch.randn(5, 24)
    emb = unit_rows(4, 8)
    logits, deltas, rec = head(x, emb)
    assert torch.allclose(logits, head.encoder(x) @ emb.t(), atol=1e-6)
    # class-agnostic regression: the same 4 numbers for every class
    assert deltas.shape == (5, 16) and torch.equal(deltas[:, :4], deltas[:, 12:])
    assert torch.isclose(rec, ((head.decoder(head.encoder(x)) - x) ** 2).mean())
    # equivariant to label order; a different label set needs no new parameters
    perm = torch.tensor([0, 3, 1, 2])
    assert torch.allclose(head(x, emb[perm])[0], logits[:, perm], atol=1e-6)
    assert head(x, unit_rows(9, 8, seed=1))[0].shape == (5, 9)


def test_mask_predictor_is_a_fixed_1x1_conv_with_the_class_embeddings():
    torch.manual_seed(0)
    head = SemanticMaskPredictor(6, 8)
    x = torch.randn(3, 6, 14, 14)
    emb = unit_rows(5, 8)
    logits, rec = head(x, emb)
    visual = F.relu(head.upsample(x))
    semantic = head.encoder(visual)
    assert logits.shape == (3, 5, 28, 28)
    assert torch.allclose(logits, torch.einsum("ndhw,kd->nkhw", semantic, emb), atol=1e-5)
    assert torch.isclose(rec, F.mse_loss(head.decoder(semantic), visual))
    assert not any("embed" in n for n, _ in head.named_parameters())  # embeddings are inputs, not weights
    # folded per-RoI scoring (what the loss and inference use) = the full map's label channel
    labels = torch.tensor([4, 0, 2])
    folded, rec2 = head(x, emb, labels)
    assert folded.shape == (3, 1, 28, 28) and torch.isclose(rec2, rec)
    assert torch.allclose(folded[:, 0], logits[torch.arange(3), labels], atol=1e-5)
    assert head(x, emb, labels, with_reconstruction=False)[1] == 0


def test_ba_rpn_objectness_is_the_two_way_score_against_learned_fg_bg_vectors():
    torch.manual_seed(0)
    head = BackgroundAwareRPNHead(8, 3, 6)
    torch.nn.init.normal_(head.semantic.weight)
    torch.nn.init.normal_(head.semantic.bias)
    feats = [torch.randn(2, 8, 5, 7), torch.randn(2, 8, 3, 4)]
    objectness, deltas = head(feats)
    fg, bg = F.normalize(head.foreground, dim=0), F.normalize(head.background, dim=0)
    for level, feature in enumerate(feats):
        s = head.semantic_features(feature)  # [N, A, D, H, W]
        two_way = torch.stack([torch.einsum("nadhw,d->nahw", s, bg), torch.einsum("nadhw,d->nahw", s, fg)])
        p_fg = two_way.softmax(0)[1]  # softmax over {background, foreground}
        assert torch.allclose(torch.sigmoid(objectness[level]), p_fg, atol=1e-5)
        assert deltas[level].shape == (2, 12, *feature.shape[-2:])
    # both vectors learn from the objectness loss
    objectness[0].sum().backward()
    assert head.foreground.grad.abs().sum() > 0 and head.background.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def word_background() -> torch.Tensor:
    return RandomTextEncoder(32).encode(["background"])[0]


@pytest.mark.parametrize("ba_rpn", [True, False])
def test_synchronized_background(ba_rpn, word_background):
    torch.manual_seed(0)
    model = create_zsi_model("zsi_resnet10t_fpn64", **TINY, ba_rpn=ba_rpn)
    model.set_word_background(word_background)
    emb = unit_rows(3, 32)
    matrix = model.class_matrix(emb)
    assert matrix.shape == (4, 32) and torch.allclose(matrix[1:], emb)
    assert torch.allclose(matrix[0], F.normalize(word_background, dim=0), atol=1e-6)  # V_b starts at the word
    if ba_rpn:
        with torch.no_grad():  # the RPN learns V_b; the heads follow on the very next pass
            model.rpn.head.background.copy_(unit_rows(1, 32, seed=7)[0] * 3)
        assert torch.allclose(model.class_matrix(emb)[0], unit_rows(1, 32, seed=7)[0], atol=1e-6)
        assert not model.class_matrix(emb).requires_grad  # heads do not train V_b
    else:
        assert not any(n.startswith("rpn.head.background") for n, _ in model.named_parameters())
        assert isinstance(model.rpn.head, torch.nn.Module) and not isinstance(model.rpn.head, BackgroundAwareRPNHead)


def test_training_losses_and_gradients(word_background):
    torch.manual_seed(0)
    model = create_zsi_model("zsi_resnet10t_fpn64", **TINY).train()
    model.set_word_background(word_background)
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], unit_rows(2, 32), [square_target()] * 2)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                           "loss_box_reconstruction", "loss_mask", "loss_mask_reconstruction"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_classifier"].backward(retain_graph=True)
    assert model.rpn.head.background.grad is None  # synchronized, not trained by the box head
    losses["loss_objectness"].backward()
    assert model.rpn.head.background.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(_configs()))
def test_registered_configs_build_and_infer(name):
    torch.manual_seed(0)
    model = create_zsi_model(name, min_size=64, max_size=96, train_min_sizes=None).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)], unit_rows(4, model.config.embed_dim))
    assert out[0]["masks"].shape[1:] == (1, 64, 80)
    assert ((out[0]["labels"] >= 1) & (out[0]["labels"] <= 4)).all()
    assert out[0]["boxes"].shape[0] <= model.config.detections_per_img
    assert "default-instances" in list_weights("zsi") and name in list_models("zsi")


def test_calibration_moves_detections_away_from_seen_labels(word_background):
    torch.manual_seed(0)
    model = create_zsi_model("zsi_resnet10t_fpn64", **TINY).eval()
    emb = unit_rows(4, 32)
    with torch.no_grad():
        plain = model([torch.rand(3, 64, 64)], emb)[0]
        offsets = torch.tensor([0.0, -50.0, -50.0, 0.0, 0.0])  # labels 1 and 2 are "seen"
        calibrated = model([torch.rand(3, 64, 64)], emb, logit_offsets=offsets)[0]
    assert set(plain["labels"].tolist()) & {1, 2}  # untrained: all labels appear
    assert set(calibrated["labels"].tolist()) <= {3, 4}


def test_save_load_round_trip_and_bad_files(tmp_path, word_background):
    torch.manual_seed(0)
    model = create_zsi_model("zsi_resnet10t_fpn64", **TINY).eval()
    model.set_word_background(word_background)
    path = tmp_path / "m.safetensors"
    save_zsi_model(path, model, extra={"labels": SEEN})
    loaded, extra = load_zsi_model(path)
    assert extra == {"labels": SEEN} and loaded.config == model.config
    x, emb = [torch.rand(3, 64, 64)], unit_rows(3, 32)
    with torch.no_grad():
        a, b = model(x, emb)[0], loaded(x, emb)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ZerosegError, match="truncated"):
        load_zsi_model(tmp_path / "cut.safetensors")
    with pytest.raises(ZerosegError, match="not found"):
        load_zsi_model(tmp_path / "missing.safetensors")


def test_overhead_baseline_is_plain_torchvision_maskrcnn():
    from torchvision.models.detection import MaskRCNN

    cfg = create_zsi_model("zsi_resnet10t_fpn64", **TINY).config
    plain = create_plain_maskrcnn(cfg, num_classes=4).eval()
    assert isinstance(plain, MaskRCNN)
    with torch.no_grad():
        out = plain([torch.rand(3, 64, 64)])
    assert out[0]["masks"].shape[1:] == (1, 64, 64)


# ----------------------------------------------------------------------------- training, API, CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ZSI model trained for a few steps on a 2-seen-class dataset (random text encoder)."""
    from zeroseg.train.instance_trainer import load_instance_config, train_instances

    root = tmp_path_factory.mktemp("zsi")
    data = make_dataset(root / "data")
    out = root / "run"
    overrides = [f"data={data}", f"out={out}", "text_encoder=random:32", "batch_size=2", "num_workers=0",
                 "epochs=2", "log_every=1", "lr=1e-3", "warmup_iters=0", "val_images=2", "seed=1"]
    cfg = load_instance_config(None, overrides)
    cfg["model_overrides"] = dict(TINY)
    summary = train_instances(cfg, progress=False)
    return {"data": data, "out": out, "summary": summary, "cfg": cfg}


def test_train_instances_writes_checkpoints_log_and_learns(trained):
    s, out = trained["summary"], trained["out"]
    assert s["global_step"] == 8 and s["epochs"] == 2  # 8 train images, batch 2
    assert 0.0 <= s["best_val_seen_mask_ap50"] <= 1.0
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,loss,lr,val_seen_mask_ap50,seconds"
    losses = [float(r.split(",")[2]) for r in rows[1:] if r.split(",")[2]]
    assert losses[-1] < losses[0]
    model, extra = load_zsi_model(out / "last.safetensors")
    assert extra["labels"] == SEEN and extra["unseen"] == UNSEEN and extra["train_text_encoder"] == "random:32"


def test_train_instances_resume_is_exact(trained, tmp_path):
    from zeroseg.train.engine import read_state
    from zeroseg.train.instance_trainer import train_instances

    cfg = dict(trained["cfg"], out=str(tmp_path / "half"), max_steps=5)
    train_instances(cfg, progress=False)
    train_instances(dict(cfg, max_steps=None), resume=str(tmp_path / "half"), progress=False)
    full, resumed = read_state(trained["out"]), read_state(tmp_path / "half")
    assert resumed["global_step"] == full["global_step"] == 8
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])


def test_training_refuses_unseen_classes(trained, tmp_path):
    from zeroseg.data.dataset import DatasetIndex
    from zeroseg.train.instance_trainer import SeenInstanceDataset

    ds = SeenInstanceDataset(DatasetIndex.read(trained["data"]), "train", (0, 0, 0), (1, 1, 1), train=True)
    for i in range(len(ds)):
        _x, target = ds[i]
        assert set(target["labels"].tolist()) <= {1, 2}  # positions of the seen classes
        assert target["masks"].shape[0] == target["boxes"].shape[0] == len(target["labels"])
    with pytest.raises(ZerosegError, match="unseen"):
        SeenInstanceDataset(DatasetIndex.read(trained["data"]), "test", (0, 0, 0), (1, 1, 1), train=False)


def test_instance_api_and_cli(trained, tmp_path, capsys):
    from PIL import Image

    from zeroseg.instance_segmenter import load_instance_model

    seg = load_instance_model(trained["out"] / "last.safetensors")
    image = np.asarray(Image.open(next((trained["data"] / "test" / "images").glob("*.png"))).convert("RGB"))
    found = seg.detect(image, ["red square", "blue bar"], score_threshold=0.0, max_detections=7)
    assert len(found) <= 7 and found.masks.shape[1:] == image.shape[:2]
    assert np.all(np.diff(found.scores) <= 0)
    assert set(found.names()) <= {"red square", "blue bar"}
    merged = seg.detect(image, ["red square", "blue bar"], score_threshold=0.0, nms_across_labels=0.5)
    from torchvision.ops import box_iou

    overlaps = box_iou(torch.from_numpy(merged.boxes), torch.from_numpy(merged.boxes)).fill_diagonal_(0)
    assert len(merged) <= len(seg.detect(image, ["red square", "blue bar"], score_threshold=0.0))
    assert (overlaps <= 0.5).all()  # no two kept boxes overlap more than the threshold, whatever their labels
    calibrated = seg.detect(image, ["red square", "blue bar"], calibration=100.0, score_threshold=1e-6)
    assert set(calibrated.names()) <= {"blue bar"}  # "red square" is seen by this model (its scores: ~e^-100)
    with pytest.raises(ZerosegError, match="empty"):
        seg.detect(image, [])

    Image.fromarray(image).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    code = main(["instances", str(tmp_path / "scene.png"), "--labels", "red square,blue bar",
                 "--model", str(trained["out"] / "last.safetensors"), "--out", str(out), "--score-threshold", "0"])
    assert code == 0
    record = json.loads((out / "scene_instances.json").read_text())
    assert record["categories"] == [{"id": 1, "name": "red square"}, {"id": 2, "name": "blue bar"}]
    assert record["detections"] and {"bbox", "score", "category_id", "segmentation"} <= set(record["detections"][0])
    with Image.open(out / "scene_instances.png") as im:
        assert im.size == (image.shape[1], image.shape[0])
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads((out / "detections.json").read_text())
    coco.createIndex()
    assert len(coco.getAnnIds()) == len(record["detections"])

    assert main(["instances", str(tmp_path / "scene.png"), "--labels", " , ", "--model",
                 str(trained["out"] / "last.safetensors"), "--out", str(out)]) == 2
    assert main(["instances", str(tmp_path / "scene.png"), "--labels", "a", "--model",
                 str(tmp_path / "nope.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("zeroseg: error: ") for line in err)


def test_score_threshold_is_the_detectors_candidate_threshold(trained):
    from PIL import Image

    from zeroseg.instance_segmenter import load_instance_model

    seg = load_instance_model(trained["out"] / "last.safetensors")
    seg.model.roi_heads.score_thresh = 0.3  # a configured threshold that would hide most pairs
    image = np.asarray(Image.open(next((trained["data"] / "test" / "images").glob("*.png"))).convert("RGB"))
    labels = ["red square", "blue bar"]
    every = seg.detect(image, labels, score_threshold=0.0, max_detections=1000)
    proposals = seg.model.config.rpn_post_nms_top_n[1]
    assert (every.scores < 0.3).any() and len(every) <= proposals * len(labels)
    cut = float(np.median(every.scores))
    shown = seg.detect(image, labels, score_threshold=cut)
    assert shown.scores.min() >= cut and 0 < len(shown) < len(every)
    # the pairs above the cut are the same whichever candidates competed for the ones kept
    top = every.scores >= cut
    assert np.array_equal(shown.scores, every.scores[top][:len(shown)])
    assert np.array_equal(shown.boxes, every.boxes[top][:len(shown)])
    assert seg.model.roi_heads.score_thresh == 0.3  # the call's threshold does not stay behind


def test_instance_relay_and_its_calibration(trained, tmp_path, capsys):
    from PIL import Image

    from zeroseg.data.coco_instances import read_instances, write_instance_annotations
    from zeroseg.eval.calibration import DEFAULT_HUBNESS
    from zeroseg.eval.instance_protocols import (RELAY_SCALE_GRID, RELAY_TOP_K_GRID, choose_instance_relay,
                                                 choose_instance_relay_hubness)
    from zeroseg.instance_segmenter import load_instance_model
    from zeroseg.models.loading import model_extra, write_model_extra

    # "green disc" stands in for a calibration class (trained here, but any named class works for the wiring)
    model = tmp_path / "cal.safetensors"
    write_model_extra(trained["out"] / "last.safetensors", model,
                      {"labels": ["red square"], "calibration_classes": ["green disc"]})
    seg = load_instance_model(model)
    assert seg.relay_top_k == 0 and seg.box_relay(["blue bar"], seg.embed(["blue bar"])) is None
    image = np.asarray(Image.open(next((trained["data"] / "test" / "images").glob("*.png"))).convert("RGB"))
    off_one, off_two = (seg.detect(image, labels, score_threshold=0.0) for labels in (["blue bar"], ["blue bar", "cat"]))
    seg.relay_top_k, seg.relay_scale = 1, 5.0
    relay = seg.box_relay(["blue bar", "cat"], seg.embed(["blue bar", "cat"]))
    emb = F.normalize(seg.embed(["red square"]), dim=-1) @ F.normalize(seg.embed(["blue bar", "cat"]), dim=-1).T
    assert relay.top_k == 1 and relay.scale == 5.0 and torch.allclose(relay.similarity, emb, atol=1e-6)
    assert seg.relay_hubness == 0.0  # files without it: no correction
    seg.relay_hubness = 0.5  # the correction lowers each label by half its mean cosine with its nearest trained names
    hub = seg.box_relay(["blue bar", "cat"], seg.embed(["blue bar", "cat"])).similarity
    assert torch.allclose(hub, emb - 0.5 * emb.max(0, keepdim=True).values, atol=1e-6)  # one trained name: k = 1
    assert seg.relay_settings()["relay_hubness"] == 0.5
    seg.relay_hubness = 0.0
    assert "relay_hubness" not in seg.relay_settings()  # off: outputs written before it still resume
    on_one, on_two = (seg.detect(image, labels, score_threshold=0.0) for labels in (["blue bar"], ["blue bar", "cat"]))
    # one asked label: objectness and the box are the detector's own, so the detections are too
    assert np.allclose(on_one.scores, off_one.scores, atol=1e-5) and np.allclose(on_one.boxes, off_one.boxes, atol=1e-3)
    # a single trained class relays every box to the asked label nearest to it in text space:
    # the best detection is named so, whatever the direct scores said
    nearest = ["blue bar", "cat"][int(emb[0].argmax())]
    assert len(on_two) and on_two.names()[0] == nearest
    seg.relay_top_k = 0
    assert np.array_equal(seg.detect(image, ["blue bar", "cat"], score_threshold=0.0).scores, off_two.scores)
    seg.relay_top_k = 1

    # the file's GZSI calibration applies where the asked labels mix trained and new names
    write_model_extra(model, tmp_path / "c.safetensors", {"gzsi_calibration": {"calibration": 100.0}})
    gzsi = load_instance_model(tmp_path / "c.safetensors")
    assert gzsi.default_calibration(["red square", "blue bar"]) == 100.0
    assert gzsi.default_calibration(["blue bar"]) == gzsi.default_calibration(["red square"]) == 0.0
    assert set(gzsi.detect(image, ["red square", "blue bar"], score_threshold=1e-6).names()) <= {"blue bar"}
    assert "red square" in gzsi.detect(image, ["red square", "blue bar"], calibration=0.0, score_threshold=0.0).names()
    assert np.array_equal(gzsi.detect(image, ["red square"], score_threshold=0.0).scores,
                          load_instance_model(model).detect(image, ["red square"], score_threshold=0.0).scores)

    write_instance_annotations(trained["data"], progress=False)
    val = read_instances(trained["data"], "val")
    ids = {c["name"]: int(c["id"]) for c in val["categories"]}
    chosen = choose_instance_relay(seg, val, trained["data"], [ids["red square"]], [ids["green disc"]], progress=False)
    assert (seg.relay_top_k, seg.relay_scale) == (1, 5.0)  # left as it was
    assert len(chosen["table"]) == 1 + len(RELAY_TOP_K_GRID) * len(RELAY_SCALE_GRID)
    best = max(row["map50_calibration"] for row in chosen["table"])
    assert chosen["map50_calibration"] == best and chosen["table"][0]["top_k"] == 0
    seg.relay_hubness = 0.25
    hub = choose_instance_relay_hubness(seg, val, trained["data"], [ids["red square"]], [ids["green disc"]],
                                        progress=False)
    assert seg.relay_hubness == 0.25 and [r["hubness"] for r in hub["table"]] == list(DEFAULT_HUBNESS)
    top = max(r["map50_calibration"] for r in hub["table"])
    assert hub["map50_calibration"] == top  # ties: the smallest correction
    assert hub["hubness"] == min(r["hubness"] for r in hub["table"] if r["map50_calibration"] == top)
    seg.relay_top_k = 0
    with pytest.raises(ZerosegError, match="switch the relay on"):
        choose_instance_relay_hubness(seg, val, trained["data"], [ids["red square"]], [ids["green disc"]],
                                      progress=False)

    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate-instances", str(model), "--data", str(trained["data"]), "--out", str(out)]) == 0
    extra = model_extra(out)
    assert extra["relay_top_k"] == extra["relay_calibration"]["top_k"] in {0, 1}
    assert extra["gzsi_calibration"]["calibration"] in [r["calibration"] for r in extra["gzsi_calibration"]["table"]]
    if extra["relay_top_k"]:  # the correction is chosen with the relay, and only then
        assert extra["relay_hubness"] == extra["relay_hubness_calibration"]["hubness"]
    else:
        assert extra["relay_hubness"] == 0.0 and "relay_hubness_calibration" not in extra
    calibrated = load_instance_model(out)
    want = {"relay_top_k": extra["relay_top_k"], "relay_scale": extra["relay_scale"]}
    assert calibrated.relay_settings() == {**want, **({"relay_hubness": extra["relay_hubness"]}
                                                      if extra["relay_hubness"] else {})}
    capsys.readouterr()
    assert main(["calibrate-instances", str(trained["out"] / "last.safetensors"), "--data", str(trained["data"]),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration classes" in err[0]


class OracleSegmenter:
    """Answers with the ground truth of the image it is shown (matched by pixels): a known-answer model."""

    source = "oracle"

    def __init__(self, data: Path):
        from zeroseg.data.dataset import DatasetIndex

        self.index = DatasetIndex.read(data)
        self.truth = {}
        for e in self.index.entries("test"):
            image, mask = self.index.load(e)
            self.truth[image.tobytes()] = mask
        self.asked: list[list[str]] = []

    def detect(self, image, labels, seen_labels=None, calibration=0.0, score_threshold=0.0):
        from zeroseg.instance_segmenter import Instances
        from zeroseg.train.instance_trainer import instance_target

        self.asked.append(list(labels))
        target = instance_target(self.truth[np.asarray(image).tobytes()])
        names = [self.index.classes[int(c)] for c in target["labels"]]
        keep = [k for k, n in enumerate(names) if n in labels]
        return Instances(boxes=target["boxes"][keep].numpy(), scores=np.linspace(0.9, 0.5, len(keep)),
                         label_ids=np.array([labels.index(names[k]) for k in keep], dtype=np.int64),
                         masks=target["masks"][keep].numpy().astype(bool), labels=list(labels))


def test_instance_protocols_score_a_perfect_model_at_one(trained, tmp_path):
    from zeroseg.data.coco_instances import read_instances, write_instance_annotations
    from zeroseg.eval.coco_metrics import category_split
    from zeroseg.eval.instance_protocols import evaluate_instances, instance_ground_truth

    write_instance_annotations(trained["data"], progress=False)
    gt = read_instances(trained["data"], "test")
    seen, unseen = category_split(gt)
    # what `zeroseg eval-instances --data` evaluates against, from the library
    assert instance_ground_truth(trained["data"], "test") == (gt, Path(trained["data"]), seen, unseen)
    with pytest.raises(ZerosegError, match="needs --data-root"):
        instance_ground_truth(coco_split="48_17")
    with pytest.raises(ZerosegError, match="COCO annotations not found"):
        instance_ground_truth(coco_split="48_17", data_root=tmp_path)
    oracle = OracleSegmenter(trained["data"])
    zsi = evaluate_instances(oracle, gt, trained["data"], seen, unseen, "zsi", progress=False, out_dir=tmp_path)
    assert oracle.asked[0] == UNSEEN  # ZSI asks about unseen names only
    assert zsi["map50"] == pytest.approx(1.0) and zsi["recall100"] == {"0.4": 1.0, "0.5": 1.0, "0.6": 1.0}
    gzsi = evaluate_instances(oracle, gt, trained["data"], seen, unseen, "gzsi", progress=False)
    assert oracle.asked[-1] == SEEN + UNSEEN
    assert gzsi["seen"]["map50"] == pytest.approx(1.0) and gzsi["hm"]["map50"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "metrics_zsi.json").read_text())["num_images"] == 4
    assert list(tmp_path.glob("example_zsi_*.png"))


def test_eval_instances_cli(trained, tmp_path, capsys):
    from zeroseg.data.coco_instances import write_instance_annotations

    write_instance_annotations(trained["data"], progress=False)
    model = str(trained["out"] / "last.safetensors")
    out = tmp_path / "eval"
    assert main(["eval-instances", "--data", str(trained["data"]), "--model", model, "--out", str(out),
                 "--max-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ZSI" in printed and "GZSI" in printed and "HM" in printed
    for mode in ("zsi", "gzsi"):
        m = json.loads((out / f"metrics_{mode}.json").read_text())
        assert m["num_images"] == 2 and 0.0 <= m["unseen"]["map50"] <= 1.0
    # one unseen class cannot be deranged; a missing COCO root names the layout
    assert main(["eval-instances", "--data", str(trained["data"]), "--model", model, "--mode", "zsi",
                 "--text-control", "shuffle"]) == 2
    assert main(["eval-instances", "--coco-split", "48_17", "--data-root", str(tmp_path / "coco"),
                 "--model", model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "at least 2 unseen" in err[0] and "instances_val2014.json" in err[1]


def test_train_instances_on_coco_seen_classes(tmp_path):
    """COCO 2014 layout (tiny fixture): the 48/17 seen classes train; the saved split is the paper's."""
    from test_coco_zsi_loader import extend_coco  # build_coco's images + seen-only ones

    from zeroseg.data.datasets.coco_zsi import coco_zsi_split
    from zeroseg.train.instance_trainer import load_instance_config, train_instances

    for split in ("train", "val"):
        extend_coco(tmp_path / "coco", split)
    cfg = load_instance_config(None, [f"data={tmp_path / 'coco'}", f"out={tmp_path / 'run'}", "dataset=coco_zsi",
                                      "coco_split=48_17", "text_encoder=random:32", "batch_size=1",
                                      "num_workers=0", "max_steps=2", "val_images=2", "warmup_iters=0"])
    cfg["model_overrides"] = dict(TINY)
    summary = train_instances(cfg, progress=False)
    assert summary["global_step"] == 2
    _model, extra = load_zsi_model(tmp_path / "run" / "last.safetensors")
    split = coco_zsi_split("48_17")
    assert extra["labels"] == split["seen"] and extra["unseen"] == split["unseen"]
    with pytest.raises(ZerosegError, match="coco_split"):
        load_instance_config(None, ["data=x", "dataset=coco_zsi", "coco_split=50_30"])


def test_train_instances_under_torchrun_two_processes(trained, tmp_path):
    """DDP (gloo, 2 CPU processes) through the documented entry point."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tiny = [f"model_overrides.{k}={json.dumps(v)}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "zeroseg.train", "--instances", "--no-progress",
           f"data={trained['data']}", f"out={tmp_path / 'run'}", "text_encoder=random:32", "batch_size=2",
           "num_workers=0", "max_steps=3", "val_images=2", "warmup_iters=0", *tiny]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    from zeroseg.train.engine import read_state

    state = read_state(tmp_path / "run")
    assert state["world_size"] == 2 and state["global_step"] == 3
    assert json.loads(r.stdout[r.stdout.index("{"):])["world_size"] == 2


class RampNamer:
    """A semantic 'model' with known answers: label j's probability rises along x for j = 0 and
    falls for j = 1 (the rest of the mass on the background label it is also asked)."""

    background = "other"
    source = "ramp"

    def __init__(self):
        self.asked: list[list[str]] = []

    def segment(self, image, labels):
        from zeroseg.api import Segmentation

        self.asked.append(list(labels))
        h, w = image.shape[:2]
        x = np.broadcast_to(np.linspace(0.0, 0.8, w, dtype=np.float32), (h, w))
        probs = np.zeros((len(labels), h, w), np.float32)
        probs[0], probs[1] = x, 0.8 - x
        probs[-1] = 1.0 - probs[0] - probs[1]
        return Segmentation(probs.argmax(0), probs, list(labels))


def test_mask_naming_rescoring(trained):
    from PIL import Image

    from zeroseg.instance_segmenter import load_instance_model
    from zeroseg.mask_naming import candidate_threshold, rescore

    assert np.allclose(rescore(np.array([0.5, 0.04]), np.array([0.2, 0.9]), 0.5), [0.1 ** 0.5, 0.036 ** 0.5])
    assert np.array_equal(rescore(np.array([0.3], np.float32), np.array([0.0]), 0.0), np.array([0.3], np.float32))
    assert candidate_threshold(0.25, 0.5) == 0.0625 and candidate_threshold(0.2, 0.0) == 0.2
    assert candidate_threshold(0.2, 1.0) == 0.0
    image = np.asarray(Image.open(next((trained["data"] / "test" / "images").glob("*.png"))).convert("RGB"))
    labels = ["blue bar", "cat"]  # new names ("red square" and "green disc" are the trained ones)
    seg = load_instance_model(trained["out"] / "last.safetensors")
    assert seg.namer is None and seg.naming_weight == 0.0
    plain = seg.detect(image, labels, score_threshold=0.0)
    seg.namer = RampNamer()
    opinion = seg.detect(image, labels, score_threshold=0.0)  # weight 0: the detector's scores, q recorded
    assert seg.namer.asked[-1] == labels + ["other"]
    assert np.array_equal(opinion.scores, plain.scores) and np.array_equal(opinion.boxes, plain.boxes)
    # q: the ramp's mean inside each mask, worked out here from the mask's pixel columns
    x = np.linspace(0.0, 0.8, image.shape[1])
    for i in range(len(opinion)):
        cols = np.nonzero(opinion.masks[i])[1]
        expected = 0.0 if not len(cols) else float(np.mean(x[cols] if opinion.label_ids[i] == 0 else 0.8 - x[cols]))
        assert abs(opinion.info["naming_q"][i] - expected) < 1e-5
    seg.naming_weight = 0.5
    mixed = seg.detect(image, labels, score_threshold=0.0)
    want = np.sqrt(plain.scores * opinion.info["naming_q"])
    order = np.argsort(-want, kind="stable")
    assert np.allclose(mixed.scores, want[order], atol=1e-6) and np.array_equal(mixed.boxes, plain.boxes[order])
    assert np.allclose(opinion.renamed(0.5).scores, mixed.scores, atol=1e-6)
    # a threshold on the final score: exactly the detections that reach it, found from fewer candidates
    cut = float(np.quantile(mixed.scores, 0.75))
    shown = seg.detect(image, labels, score_threshold=cut)
    assert 0 < len(shown) == int((mixed.scores >= cut).sum())
    assert np.allclose(shown.scores, mixed.scores[:len(shown)], atol=1e-6)
    assert seg.relay_settings()["mask_naming"] == {"model": "ramp", "weight": 0.5}
    with pytest.raises(ZerosegError, match="no mask-naming opinion"):
        plain.renamed(0.5)
    # labels that mix trained and new names (GZSI): the detector's scores alone
    mixed_labels = ["red square", "cat"]
    assert seg.mixes_trained_and_new(mixed_labels) and not seg.mixes_trained_and_new(labels)
    asked = len(seg.namer.asked)
    gzsi = seg.detect(image, mixed_labels, score_threshold=0.0, calibration=0.0)
    assert len(seg.namer.asked) == asked and "naming_q" not in gzsi.info
    seg.namer = None
    assert np.array_equal(gzsi.scores, seg.detect(image, mixed_labels, score_threshold=0.0, calibration=0.0).scores)


def test_mask_naming_from_the_model_file_and_its_choice_on_val(trained, tmp_path, capsys):
    from conftest import TINY_CONV

    from zeroseg.data.coco_instances import read_instances, write_instance_annotations
    from zeroseg.eval.instance_protocols import NAMING_WEIGHT_GRID, choose_instance_naming
    from zeroseg.instance_segmenter import load_instance_model
    from zeroseg.models.loading import model_extra, save_safetensors, write_model_extra
    from zeroseg.models.registry import create_model

    torch.manual_seed(0)
    namer_file = tmp_path / "namer.safetensors"
    save_safetensors(namer_file, create_model(dict(TINY_CONV, embed_dim=32)), extra={"train_text_encoder": "random:32"})
    model = tmp_path / "cal.safetensors"
    write_model_extra(trained["out"] / "last.safetensors", model,
                      {"labels": ["red square"], "calibration_classes": ["green disc"],
                       "mask_naming": {"model": str(namer_file), "weight": 0.25}})
    seg = load_instance_model(model)
    assert seg.namer is not None and seg.naming_weight == 0.25 and seg.namer.source == str(namer_file)
    off = load_instance_model(model, mask_naming=False)
    assert off.namer is None and off.naming_weight == 0.0

    write_instance_annotations(trained["data"], progress=False)
    val = read_instances(trained["data"], "val")
    ids = {c["name"]: int(c["id"]) for c in val["categories"]}
    seg.namer = RampNamer()
    chosen = choose_instance_naming(seg, val, trained["data"], [ids["red square"]], [ids["green disc"]],
                                    progress=False)
    assert seg.naming_weight == 0.25  # left as it was
    assert [row["weight"] for row in chosen["table"]] == list(NAMING_WEIGHT_GRID)
    best = max(row["map50_calibration"] for row in chosen["table"])
    assert chosen["map50_calibration"] == best
    assert chosen["weight"] == min(row["weight"] for row in chosen["table"] if row["map50_calibration"] == best)
    # weight 0 is the detector alone: the relay-free mAP of the plain model
    from zeroseg.eval.instance_protocols import evaluate_instances

    alone = evaluate_instances(off, val, trained["data"], [ids["red square"]], [ids["green disc"]], "zsi",
                               progress=False)
    assert chosen["table"][0]["map50_calibration"] == alone["map50"]

    out = tmp_path / "named.safetensors"
    assert main(["calibrate-instances", str(model), "--data", str(trained["data"]), "--out", str(out),
                 "--no-relay", "--namer", str(namer_file)]) == 0
    extra = model_extra(out)["mask_naming"]
    assert extra["model"] == str(namer_file) and extra["weight"] in NAMING_WEIGHT_GRID
    assert "mask naming by" in capsys.readouterr().out
    # the CLI's --mask-naming 0 runs the detector alone, whatever the file chose
    detected = tmp_path / "det"
    image = next((trained["data"] / "test" / "images").glob("*.png"))
    assert main(["instances", str(image), "--labels", "blue bar,cat", "--model", str(model),
                 "--mask-naming", "0", "--out", str(detected)]) == 0
    record = json.loads((detected / f"{image.stem}_instances.json").read_text())
    assert "mask_naming" not in record["options"]
    assert main(["instances", str(image), "--labels", "blue bar,cat", "--model", str(model),
                 "--mask-naming", "0.5", "--out", str(tmp_path / "det2")]) == 0
    record = json.loads((tmp_path / "det2" / f"{image.stem}_instances.json").read_text())
    assert record["options"]["mask_naming"] == {"model": str(namer_file), "weight": 0.5}


class DistractedOracle(OracleSegmenter):
    """The oracle, plus a copy of every true detection named by the last asked label, scored higher."""

    def detect(self, image, labels, **kw):
        from zeroseg.instance_segmenter import Instances

        true = super().detect(image, labels, **kw)
        n = len(true)
        return Instances(boxes=np.concatenate([true.boxes, true.boxes]), scores=np.concatenate([true.scores + 0.05,
                                                                                                 true.scores]),
                         label_ids=np.concatenate([np.full(n, len(labels) - 1), true.label_ids]),
                         masks=np.concatenate([true.masks, true.masks]), labels=list(labels))


def test_val_protocols_ask_distractor_names_and_drop_their_detections(trained):
    from zeroseg.data.coco_instances import read_instances, write_instance_annotations
    from zeroseg.data.synth import distractor_names, load_class_list
    from zeroseg.eval.coco_metrics import category_split
    from zeroseg.eval.instance_protocols import evaluate_instances

    avoid = ["bear face", "light bulb"]
    names = distractor_names(30, avoid=avoid)
    assert len(set(names)) == 30 and names == distractor_names(30, avoid=avoid)
    assert not {c["name"] for c in load_class_list()} & set(names)
    assert not any({"bear", "face", "light", "bulb"} & set(n.split()) for n in names)
    assert distractor_names(30, avoid=avoid, seed=1) != names
    with pytest.raises(ZerosegError, match="distractor names available"):
        distractor_names(10 ** 6)

    write_instance_annotations(trained["data"], progress=False)
    gt = read_instances(trained["data"], "test")
    seen, unseen = category_split(gt)
    oracle = DistractedOracle(trained["data"])
    r = evaluate_instances(oracle, gt, trained["data"], seen, unseen, "zsi", progress=False, distractors=names[:3])
    assert oracle.asked[0] == UNSEEN + names[:3]
    # the distractor's copies (the best scores) are dropped before scoring: the true ones score 1
    assert r["map50"] == pytest.approx(1.0) and r["recall100"]["0.5"] == 1.0
