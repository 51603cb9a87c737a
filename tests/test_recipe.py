"""The default models' training recipe: style augmentation, held-out calibration classes, GZS
calibration chosen on them, and the re-styled test scenes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import make_dataset, tiny_cfg

from zeroseg.data.dataset import IGNORE_INDEX, DatasetIndex, SynthDataset
from zeroseg.data.restyle import restyle_image, restyle_split
from zeroseg.errors import ZerosegError
from zeroseg.eval.calibration import choose_seen_offset, seen_offsets
from zeroseg.eval.protocols import evaluate
from zeroseg.train.data import AugmentConfig, SeenSegmentationDataset, calibration_classes, seen_label_set
from zeroseg.train.engine import load_config, train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"))


def test_style_augmentation_changes_pixels_not_crops(dataset):
    index = DatasetIndex.read(dataset)
    plain = SeenSegmentationDataset(index, "train", [0.5] * 3, [0.5] * 3, train=True, seed=1,
                                    augment=AugmentConfig(64, 0.75, 1.5, True, 0.2, 0.0))
    styled = [SeenSegmentationDataset(index, "train", [0.5] * 3, [0.5] * 3, train=True, seed=1,
                                      augment=AugmentConfig(64, 0.75, 1.5, True, 0.2, 1.0)) for _ in range(2)]
    changed = 0
    for i in range(len(plain)):
        a, b, c = plain[i], styled[0][i], styled[1][i]
        assert (a["target"] == b["target"]).all()  # the same crop and flip
        assert (b["image"] == c["image"]).all()    # deterministic
        changed += int(not (a["image"] == b["image"]).all())
    assert changed == len(plain)
    with pytest.raises(ZerosegError, match="style_augment"):
        load_config(None, [f"data={dataset}", "style_augment=1.5"])


def test_calibration_classes_are_held_out_of_training(dataset, tmp_path):
    index = DatasetIndex.read(dataset)
    held = calibration_classes(index, 1, seed=0)
    assert held == calibration_classes(index, 1, seed=0) and len(held) == 1 and held[0] in index.seen
    assert held[0] not in seen_label_set(index, held)
    ds = SeenSegmentationDataset(index, "train", [0.5] * 3, [0.5] * 3, train=False, held_out=held)
    _, mask = index.load(ds.entries[0])
    target = ds[0]["target"].numpy()
    assert (target[mask == index.class_id(held[0])] == IGNORE_INDEX).all()
    assert set(np.unique(target)) <= {0, 1, IGNORE_INDEX}
    with pytest.raises(ZerosegError, match="calibration_classes"):
        calibration_classes(index, 2)  # 2 seen classes: at least one must stay for training
    summary = train(tiny_cfg(dataset, tmp_path / "run", calibration_classes=1, epochs=1), progress=False)
    from zeroseg.models.loading import read_safetensors_metadata

    extra = json.loads(read_safetensors_metadata(summary["best"])["extra"])
    assert extra["calibration_classes"] == held and held[0] not in extra["labels"]


class TableSegmenter:
    """Logits by the true class of each pixel: trained class "red square" beats the calibration
    class "green disc" by 1 on green pixels and by 3 on red ones, so offsets in (1, 3] are right."""

    LOGITS = {0: {0: 5.0}, 1: {1: 3.0, 2: 0.0}, 2: {1: 2.0, 2: 1.0}}

    def __init__(self, data: SynthDataset):
        self.masks = {data.load(i)[0].tobytes(): data.load(i)[1] for i in range(len(data))}
        self.offsets_seen = []

    def segment(self, image, labels, short_side=None, logit_offsets=None):
        self.offsets_seen.append(logit_offsets)
        mask = self.masks[np.asarray(image).tobytes()]
        names = {"other": 0, "red square": 1, "green disc": 2, "blue bar": 3}
        logits = np.full((len(labels),) + mask.shape, -5.0)
        for true_id, row in self.LOGITS.items():
            for label_id, value in row.items():
                logits[[names[n] for n in labels].index(label_id), mask == true_id] = value
        if logit_offsets is not None:
            logits += np.asarray(logit_offsets)[:, None, None]
        p = np.exp(logits - logits.max(0))

        class Out:
            probs = p / p.sum(0)
            label_map = probs.argmax(0)
        return Out()


def test_seen_offset_is_chosen_on_calibration_classes(dataset):
    seg = TableSegmenter(SynthDataset(dataset, "val"))
    result = choose_seen_offset(seg, dataset, ["other", "red square"], ["green disc"], progress=False)
    assert result["offset"] == 1.5 and result["hiou"] == 100.0
    zero = next(r for r in result["table"] if r["offset"] == 0.0)
    assert zero["miou_calibration"] == 0.0 and zero["hiou"] == 0.0
    with pytest.raises(ZerosegError, match="calibration classes"):
        choose_seen_offset(seg, dataset, ["other", "red square"], [], progress=False)


def test_gzs_evaluation_passes_offsets_by_class_name(dataset):
    seg = TableSegmenter(SynthDataset(dataset, "test"))
    evaluate(seg, dataset, "gzs", label_offsets=seen_offsets(["other", "red square"], 1.5), progress=False)
    assert seg.offsets_seen and all(o == [0.0, -1.5, 0.0, 0.0] for o in seg.offsets_seen)


def test_restyled_split_keeps_scenes_and_masks(dataset, tmp_path):
    out = restyle_split(dataset, tmp_path / "styled", "all")
    src, styled = SynthDataset(dataset, "test"), SynthDataset(out, "test")
    assert len(src) == len(styled)
    for i in range(len(src)):
        (a, ma), (b, mb) = src.load(i), styled.load(i)
        assert (ma == mb).all() and a.shape == b.shape and not (a == b).all()
    with pytest.raises(ZerosegError, match="unknown style"):
        restyle_image(None, "cubist")


class OneLabelPerObject:
    """Each val object gets the single label with the best calibrated score (as NMS across labels
    leaves it): a trained-class object scores 0.9 as itself and 0.2 as the calibration class; a
    calibration-class object scores 0.9 as the trained class and 0.6 as itself. So C in (0.3, 0.7]
    is right, C <= 0.3 misses the calibration class, C > 0.7 renames the trained class."""

    source = "one-label-per-object"

    def __init__(self, data, trained: str, held: str):
        index = DatasetIndex.read(data)
        self.index, self.trained, self.held = index, trained, held
        self.truth = {index.load(e)[0].tobytes(): index.load(e)[1] for e in index.entries("val")}

    def detect(self, image, labels, seen_labels=None, calibration=0.0, score_threshold=0.0):
        from zeroseg.instance_segmenter import Instances
        from zeroseg.train.instance_trainer import instance_target

        target = instance_target(self.truth[np.asarray(image).tobytes()])
        names = [self.index.classes[int(c)] for c in target["labels"]]
        scores = {self.trained: {self.trained: 0.9, self.held: 0.2}, self.held: {self.trained: 0.9, self.held: 0.6}}
        picked, conf = [], []
        for n in names:
            s = {lab: v - (calibration if lab in (seen_labels or []) else 0.0) for lab, v in scores[n].items()}
            best = max(s, key=s.get)
            picked.append(labels.index(best))
            conf.append(s[best])
        return Instances(boxes=target["boxes"].numpy(), scores=np.array(conf), label_ids=np.array(picked),
                         masks=target["masks"].numpy().astype(bool), labels=list(labels))


def test_instance_calibration_is_chosen_on_calibration_classes(dataset):
    from zeroseg.data.coco_instances import read_instances, write_instance_annotations
    from zeroseg.eval.instance_protocols import choose_instance_calibration

    write_instance_annotations(dataset, ["val"], progress=False)
    gt = read_instances(dataset, "val")
    ids = {c["name"]: int(c["id"]) for c in gt["categories"]}
    seg = OneLabelPerObject(dataset, "red square", "green disc")
    cal = choose_instance_calibration(seg, gt, dataset, [ids["red square"]], [ids["green disc"]], progress=False)
    assert cal["calibration"] == 0.5 and cal["hm_map50"] == pytest.approx(1.0)
    by_c = {row["calibration"]: row for row in cal["table"]}
    assert by_c[0.0]["map50_calibration"] == 0.0 and by_c[1.0]["map50_trained"] == 0.0


class BackgroundHeavySegmenter:
    """On green-disc pixels "other" beats "green disc" by 1; on background "other" wins by 5."""

    def __init__(self, data: SynthDataset):
        self.masks = {data.load(i)[0].tobytes(): data.load(i)[1] for i in range(len(data))}

    def segment(self, image, labels, short_side=None, logit_offsets=None):
        mask = self.masks[np.asarray(image).tobytes()]
        assert labels == ["other", "green disc"]  # the fixed setting: background + stand-in unseen classes
        logits = np.zeros((2,) + mask.shape)
        logits[0] = np.where(mask == 2, 2.0, 5.0)
        logits[1] = np.where(mask == 2, 1.0, 0.0)
        p = np.exp(logits - logits.max(0))

        class Out:
            probs = p / p.sum(0)
        return Out()


def test_background_offset_is_chosen_on_calibration_classes(dataset):
    from zeroseg.eval.calibration import choose_background_offset

    result = choose_background_offset(BackgroundHeavySegmenter(SynthDataset(dataset, "val")), dataset,
                                      ["green disc"], progress=False)
    assert result["offset"] == 1.5 and result["miou_calibration"] == 100.0
    assert result["table"][0]["miou_calibration"] == 0.0  # uncalibrated, every disc is "other"


class DistractedSegmenter:
    """Like BackgroundHeavySegmenter, plus a distractor name that wins on every other row of the disc."""

    def __init__(self, data: SynthDataset):
        self.masks = {data.load(i)[0].tobytes(): data.load(i)[1] for i in range(len(data))}

    def segment(self, image, labels, short_side=None, logit_offsets=None):
        mask = self.masks[np.asarray(image).tobytes()]
        assert labels == ["other", "green disc", "zebra crossing"]
        disc = mask == 2
        even = (np.arange(mask.shape[0]) % 2 == 0)[:, None]
        logits = np.stack([np.where(disc, 2.0, 5.0), np.where(disc, 1.0, 0.0), np.where(disc & even, 4.5, -10.0)])
        p = np.exp(logits - logits.max(0))

        class Out:
            probs = p / p.sum(0)
        return Out()


def test_background_offset_with_distractor_names(dataset):
    from zeroseg.eval.calibration import choose_background_offset

    data = SynthDataset(dataset, "val")
    result = choose_background_offset(DistractedSegmenter(data), dataset, ["green disc"], progress=False,
                                      distractors=["zebra crossing"])
    assert result["distractors"] == ["zebra crossing"] and result["calibration_classes"] == ["green disc"]
    # pixels the distractor takes are misses for the disc: 100 is out of reach once "other" is lowered
    assert 0.0 < result["miou_calibration"] < 100.0
    assert result["table"][0]["miou_calibration"] == 0.0


def test_model_file_carries_label_offsets(tiny_model_file, tmp_path, capsys):
    from zeroseg import load_model
    from zeroseg.cli import main
    from zeroseg.models.loading import model_extra, write_model_extra

    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    dst = tmp_path / "offset.safetensors"
    write_model_extra(tiny_model_file, dst, {"label_offsets": {"b": 50.0}})
    assert model_extra(dst)["label_offsets"] == {"b": 50.0}
    seg = load_model(dst)
    assert (seg.segment(image, ["a", "b"]).label_map == 1).all()  # "b" wins everywhere
    assert (seg.segment(image, ["a", "b"], logit_offsets=[100.0, 0.0]).label_map == 0).all()  # explicit adds on
    seg.label_offsets = {}
    plain = load_model(tiny_model_file).segment(image, ["a", "b"])
    assert np.array_equal(seg.segment(image, ["a", "b"]).probs, plain.probs)
    rc = main(["calibrate", str(tiny_model_file), "--data", str(tmp_path), "--out", str(tmp_path / "c.safetensors")])
    assert rc == 2 and "no calibration classes" in capsys.readouterr().err  # trained without them: one line
