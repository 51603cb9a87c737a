"""Instance annotations (COCO JSON) derived from label maps, written by the generator and the CLI."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg.cli import main
from zeroseg.data import synth
from zeroseg.data.coco_instances import (
    FORMAT,
    coco_from_dataset,
    image_annotations,
    instance_counts,
    instances_from_label_map,
    read_instances,
    write_instance_annotations,
)
from zeroseg.errors import ZerosegError
from zeroseg.eval.coco_metrics import decode_mask

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inst") / "tiny"
    synth.generate(out, n_train=3, n_val=2, n_test=3, size=64, workers=1, progress=False)
    return out


@pytest.fixture()
def copy(tiny, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may change."""
    return Path(shutil.copytree(tiny, tmp_path / "copy"))


def _label(root: Path, entry: dict) -> np.ndarray:
    with Image.open(root / entry["mask"]) as im:
        return np.asarray(im).astype(np.int64)


# ----------------------------------------------------------------------------- one label map


def two_class_label_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab = np.zeros((6, 8), np.int64)
    lab[1:3, 2:5] = 7  # class 7: rows 1-2, columns 2-4 -> 6 pixels, bbox x=2 y=1 w=3 h=2
    lab[4, 0] = 3  # class 3 in two pieces (as after occlusion): one pixel at row 4, column 0 ...
    lab[4:6, 6:8] = 3  # ... and rows 4-5, columns 6-7 -> 5 pixels, bbox x=0 y=4 w=8 h=2
    lab[0, 0] = 255  # ignore: not an instance
    m3 = np.zeros((6, 8), bool)
    m3[4, 0] = True
    m3[4:6, 6:8] = True
    m7 = np.zeros((6, 8), bool)
    m7[1:3, 2:5] = True
    return lab, m3, m7


def test_instances_from_label_map_by_hand():
    lab, m3, m7 = two_class_label_map()
    inst = instances_from_label_map(lab)
    assert [c for c, _ in inst] == [3, 7]  # ascending, 0 and 255 left out
    assert inst[0][1].dtype == bool and np.array_equal(inst[0][1], m3) and np.array_equal(inst[1][1], m7)
    assert instances_from_label_map(np.zeros((4, 4), np.uint8)) == []
    with pytest.raises(ZerosegError, match=r"\[H, W\]"):
        instances_from_label_map(np.zeros((2, 4, 4), np.uint8))


def test_image_annotations_by_hand():
    lab, m3, m7 = two_class_label_map()
    anns = image_annotations(lab.astype(np.uint8))
    assert [(a["category_id"], a["area"], a["bbox"], a["iscrowd"]) for a in anns] == [
        (3, 5, [0, 4, 8, 2], 0),
        (7, 6, [2, 1, 3, 2], 0),
    ]
    assert np.array_equal(decode_mask(anns[0]["segmentation"]), m3)
    assert np.array_equal(decode_mask(anns[1]["segmentation"]), m7)
    assert all(isinstance(a["segmentation"]["counts"], str) and a["segmentation"]["size"] == [6, 8] for a in anns)
    json.dumps(anns)


# ----------------------------------------------------------------------------- a generated dataset


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' annToMask
def test_generate_writes_instances_that_match_the_label_maps(tiny):
    from pycocotools.coco import COCO

    index = json.loads((tiny / "index.json").read_text())
    assert index["instances"] == {s: f"{s}/instances.json" for s in SPLITS}
    for split in SPLITS:
        path = tiny / split / "instances.json"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))  # pycocotools loads it
        gt = json.loads(path.read_text())
        assert gt["info"]["format"] == FORMAT and gt["info"]["split"] == split
        cats = gt["categories"]
        assert [c["id"] for c in cats] == list(range(1, len(index["classes"])))
        assert all(c["name"] == index["classes"][c["id"]] for c in cats)
        assert {c["name"] for c in cats if c["supercategory"] == "unseen"} == set(index["unseen"])
        assert {c["name"] for c in cats if c["supercategory"] == "seen"} == set(index["seen"])
        entries = index["splits"][split]
        assert len(gt["images"]) == len(entries)
        assert [a["id"] for a in gt["annotations"]] == list(range(1, len(gt["annotations"]) + 1))
        for pos, (img, entry) in enumerate(zip(gt["images"], entries, strict=True)):
            assert img == {"id": pos + 1, "file_name": entry["image"], "width": 64, "height": 64,
                           "zeroseg_id": entry["id"]}
            label = _label(tiny, entry)
            anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
            assert len(coco.getAnnIds(imgIds=[img["id"]])) == len(anns)
            present = [int(v) for v in np.unique(label) if v]
            assert [a["category_id"] for a in anns] == present
            assert [index["classes"][c] for c in present] == entry["classes"]
            for a in anns:
                mask = label == a["category_id"]
                assert np.array_equal(decode_mask(a["segmentation"]), mask)
                assert np.array_equal(coco.annToMask(a).astype(bool), mask)
                ys, xs = np.nonzero(mask)
                assert a["area"] == mask.sum()
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert a["iscrowd"] == 0
        if split != "test":  # train and val never hold an unseen class
            unseen_ids = {c["id"] for c in cats if c["supercategory"] == "unseen"}
            assert not {a["category_id"] for a in gt["annotations"]} & unseen_ids
        assert read_instances(tiny, split) == gt
        assert coco_from_dataset(tiny, split, progress=False) == gt  # from disk == from the generator


def test_cli_adds_instances_to_an_older_dataset(copy, capsys, tiny):
    # make it look like a dataset written before instance annotations existed
    index = json.loads((copy / "index.json").read_text())
    del index["instances"]
    (copy / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    for split in SPLITS:
        (copy / split / "instances.json").unlink()
    with pytest.raises(ZerosegError, match="zeroseg data instances"):
        read_instances(copy, "test")

    assert main(["data", "instances", str(copy)]) == 0
    out = capsys.readouterr().out
    for split in SPLITS:
        # the same bytes as the generator's own files
        assert (copy / split / "instances.json").read_bytes() == (tiny / split / "instances.json").read_bytes()
        n = instance_counts(read_instances(copy, split))
        assert f"{split}: {n['images']} images, {n['instances']} instances" in out
    # index.json lists them again, written exactly as the generator writes it
    assert (copy / "index.json").read_bytes() == (tiny / "index.json").read_bytes()
    test_counts = instance_counts(read_instances(copy, "test"))
    assert test_counts["unseen_instances"] >= 1 and test_counts["images"] == 3
    assert not list(copy.rglob("*.tmp"))


def test_write_instance_annotations_for_some_splits(copy):
    for split in SPLITS:
        (copy / split / "instances.json").unlink()
    written = write_instance_annotations(copy, ["val"], progress=False)
    assert written == {"val": copy / "val" / "instances.json"}
    assert written["val"].is_file() and not (copy / "test" / "instances.json").exists()
    with pytest.raises(ZerosegError, match="unknown split"):
        write_instance_annotations(copy, ["validation"], progress=False)


def test_read_instances_errors(copy, capsys, tmp_path):
    path = copy / "test" / "instances.json"
    gt = json.loads(path.read_text())

    def expect(match: str) -> None:
        with pytest.raises(ZerosegError, match=match) as err:
            read_instances(copy, "test")
        assert "\n" not in str(err.value) and "zeroseg data instances" in str(err.value)

    path.write_text("{not json")
    expect("malformed")
    path.write_text(json.dumps({**gt, "info": {"format": "something/1", "split": "test"}}))
    expect("format")
    path.write_text(json.dumps({**gt, "info": {**gt["info"], "split": "val"}}))
    expect("split 'val'")
    path.write_text(json.dumps({**gt, "annotations": [{**gt["annotations"][0], "category_id": 999}]}))
    expect("unknown image or category")
    renamed = [{**gt["images"][0], "file_name": "test/images/elsewhere.png"}, *gt["images"][1:]]
    path.write_text(json.dumps({**gt, "images": renamed}))
    expect("out of date")
    path.unlink()
    expect("no instance annotations")
    # and through the CLI: one line, exit code 2
    assert main(["data", "instances", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zeroseg: error:") and err.count("\n") == 1
