"""Real-dataset loaders on tiny fixtures in the datasets' exact on-disk formats (tests/dataset_fixtures.py)."""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from dataset_fixtures import (
    PASCAL_NAMES,
    build_ade,
    build_coco,
    build_fss,
    build_pascal,
    pascal_labels,
    write_hsnet_coco_pkl,
)

from zeroseg.data.datasets import DATASETS, episode_target, open_dataset
from zeroseg.data.datasets.ade20k import ade20k_classes
from zeroseg.data.datasets.base import load_data
from zeroseg.data.datasets.coco20i import coco_categories, coco_classes, fold_classes
from zeroseg.data.datasets.coco_zsi import coco_zsi_split, filter_coco
from zeroseg.data.datasets.fss1000 import fss_classes, fss_split_classes
from zeroseg.data.datasets.pascal5i import voc_classes
from zeroseg.errors import ZerosegError

COCO_NAMES = [c["name"] for c in coco_categories()]


def assert_one_line_error(excinfo, *fragments: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


# ============================================================================ registry


def test_registry_names_and_unknown_dataset(tmp_path):
    assert set(DATASETS) == {"pascal5i", "coco20i", "fss1000", "ade20k"}
    with pytest.raises(ZerosegError) as e:
        open_dataset("cityscapes", tmp_path)
    assert_one_line_error(e, "unknown dataset", "pascal5i")
    build_pascal(tmp_path)
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=0, convention="contiguous")
    assert_one_line_error(e, "unknown option", "convention")
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=4)
    assert_one_line_error(e, "fold must be one of 0, 1, 2, 3")


@pytest.mark.parametrize("name", ["pascal5i", "coco20i", "fss1000", "ade20k"])
def test_missing_root_names_the_layout(tmp_path, name):
    with pytest.raises(ZerosegError) as e:
        open_dataset(name, tmp_path / "nowhere")
    assert_one_line_error(e, name, "dataset root not found", "expected layout:", DATASETS[name].layout)


# ============================================================================ PASCAL-5i


def test_pascal_classes_and_folds(tmp_path):
    build_pascal(tmp_path)
    ds = open_dataset("pascal5i", tmp_path, fold=1, split="val")
    assert ds.name == "pascal5i" and ds.fold == 1 and ds.split == "val"
    assert len(ds.classes) == 21 and ds.classes[0] == "others"
    assert ds.classes[1] == "aeroplane" and ds.classes[11] == "diningtable" and ds.classes[20] == "tvmonitor"
    assert ds.test_classes == [6, 7, 8, 9, 10]
    assert open_dataset("pascal5i", tmp_path, fold=3).test_classes == [16, 17, 18, 19, 20]
    train = open_dataset("pascal5i", tmp_path, fold=1, split="train")
    assert train.split == "train" and train.test_classes == [1, 2, 3, 4, 5, *range(11, 21)]
    assert open_dataset("pascal5i", tmp_path).test_classes == list(range(1, 21))
    readable = open_dataset("pascal5i", tmp_path, fold=0, names="readable")
    assert readable.classes[0] == "other" and readable.classes[11] == "dining table"


def test_pascal_labels_read_back_exactly(tmp_path):
    labels = build_pascal(tmp_path)
    ds = open_dataset("pascal5i", tmp_path, fold=0)
    assert len(ds) == 4
    for i, name in enumerate(PASCAL_NAMES):
        image, label, classes = ds[i]
        assert image.dtype == np.uint8 and image.shape == (*labels[name].shape, 3)
        assert label.dtype == np.int64
        np.testing.assert_array_equal(label, labels[name])  # palette and grey PNGs alike, 255 kept
        assert classes == ds.classes
    # The flat JPEG colour of image 1 comes back within JPEG error.
    assert np.abs(ds[1][0].astype(int) - [60, 100, 170]).max() <= 3
    with pytest.raises(IndexError):
        ds[4]


def test_pascal_derived_episodes_and_binary_targets(tmp_path):
    labels = build_pascal(tmp_path)
    # fold 0 = classes 1..5: image 0 has 1; image 1 has 3; image 3 has 2 (one pixel) and 5.
    ds = open_dataset("pascal5i", tmp_path, fold=0)
    assert ds.episodes() == [(0, 1), (1, 3), (3, 2), (3, 5)]
    assert open_dataset("pascal5i", tmp_path, fold=0, min_pixels=2).episodes() == [(0, 1), (1, 3), (3, 5)]
    assert open_dataset("pascal5i", tmp_path, fold=1).episodes() == [(0, 7)]
    assert open_dataset("pascal5i", tmp_path, fold=2).episodes() == [(1, 15), (2, 12)]
    assert open_dataset("pascal5i", tmp_path, fold=3).episodes() == []
    # Training pairs of fold 0 come from train.txt (first two images), classes outside fold 0.
    assert open_dataset("pascal5i", tmp_path, fold=0, split="train").episodes() == [(0, 7), (1, 15)]

    _, target, names = ds.episode(0)  # image 0, aeroplane
    a = labels[PASCAL_NAMES[0]]
    expected = np.where(a == 1, 1, 0)
    expected[a == 255] = 255  # ignore stays ignore; the car (class 7) becomes 0
    np.testing.assert_array_equal(target, expected)
    assert target.dtype == np.int64 and names == ["others", "aeroplane"]
    assert set(np.unique(target)) == {0, 1, 255}
    np.testing.assert_array_equal(episode_target(a, 7), np.where(a == 255, 255, (a == 7).astype(int)))


def test_pascal_hsnet_list_file_is_used_when_present(tmp_path):
    labels = build_pascal(tmp_path, with_lists=True)
    ds = open_dataset("pascal5i", tmp_path, fold=0)
    # Images follow the list (first appearance), episodes are exactly its lines.
    assert len(ds) == 3
    assert [ds.image_id(i) for i in range(3)] == ["2007_000039", "2009_000001", "2007_000032"]
    assert ds.episodes() == [(0, 3), (1, 5), (2, 1)]
    np.testing.assert_array_equal(ds[2][1], labels["2007_000032"])
    assert "fold0.txt" in ds.episode_source
    # Fold 1 has no list file: it falls back to the derived list over ImageSets val.txt.
    ds1 = open_dataset("pascal5i", tmp_path, fold=1)
    assert len(ds1) == 4 and ds1.episodes() == [(0, 7)] and "derived" in ds1.episode_source


def test_pascal_errors_name_the_layout(tmp_path):
    build_pascal(tmp_path, with_lists=True)
    # Missing list: neither an HSNet list for fold 1 nor ImageSets/Segmentation/val.txt.
    (tmp_path / "VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=1)
    assert_one_line_error(e, "no image list", "fold<i>.txt", "val.txt", "expected layout:")
    # An explicit splits_dir must hold the file.
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=2, splits_dir=tmp_path / "splits")
    assert_one_line_error(e, "list file not found", "fold2.txt")
    # A list line naming a class outside the fold is refused.
    (tmp_path / "splits/pascal/val/fold0.txt").write_text("2007_000032__07\n")
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=0)
    assert_one_line_error(e, "class 7", "fold 0")
    (tmp_path / "splits/pascal/val/fold0.txt").write_text("2007_000032-01\n")
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=0)
    assert_one_line_error(e, "bad line", "<image name>__<class id>")
    # Missing annotation folder.
    shutil.rmtree(tmp_path / "VOC2012/SegmentationClassAug")
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=0)
    assert_one_line_error(e, "annotation folder not found", "SegmentationClassAug", "expected layout:")
    shutil.rmtree(tmp_path / "VOC2012/JPEGImages")
    with pytest.raises(ZerosegError) as e:
        open_dataset("pascal5i", tmp_path, fold=0)
    assert_one_line_error(e, "no JPEGImages folder")


def test_pascal_is_lazy_and_reports_corrupt_files_on_read(tmp_path):
    build_pascal(tmp_path)
    seg = tmp_path / "VOC2012/SegmentationClassAug"
    (seg / "2008_000123.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "VOC2012/JPEGImages/2007_000039.jpg").write_bytes(b"not a jpeg")
    ds = open_dataset("pascal5i", tmp_path, fold=0)  # opening reads no image or mask
    assert len(ds) == 4
    np.testing.assert_array_equal(ds[0][1], pascal_labels()[PASCAL_NAMES[0]])
    with pytest.raises(ZerosegError) as e:
        ds[2]
    assert_one_line_error(e, "unreadable annotation", "2008_000123.png", "expected layout:")
    with pytest.raises(ZerosegError) as e:
        ds[1]
    assert_one_line_error(e, "2007_000039.jpg", "expected layout:")
    # A colour-coded (RGB) mask is not a label-index PNG.
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(seg / "2008_000123.png")
    with pytest.raises(ZerosegError) as e:
        ds[2]
    assert_one_line_error(e, "RGB image, not a label-index PNG")
    # Out-of-range label values are reported, not passed on as class ids.
    Image.fromarray(np.full((16, 16), 21, np.uint8)).save(seg / "2008_000123.png")
    with pytest.raises(ZerosegError) as e:
        ds[2]
    assert_one_line_error(e, "value 21 outside 0-20 and 255")


def test_pascal_accepts_voc_folder_as_root(tmp_path):
    labels = build_pascal(tmp_path)
    ds = open_dataset("pascal5i", tmp_path / "VOC2012", fold=0)
    np.testing.assert_array_equal(ds[3][1], labels[PASCAL_NAMES[3]])


# ============================================================================ COCO-20i


def test_coco_fold_conventions():
    inter = [fold_classes(f, "interleaved") for f in range(4)]
    contig = [fold_classes(f, "contiguous") for f in range(4)]
    assert inter[0][:4] == [1, 5, 9, 13] and inter[0][-1] == 77
    assert inter[3][:3] == [4, 8, 12] and inter[3][-1] == 80
    assert contig[0] == list(range(1, 21)) and contig[3] == list(range(61, 81))
    for folds in (inter, contig):
        assert all(len(f) == 20 for f in folds)
        assert sorted(c for f in folds for c in f) == list(range(1, 81))
    # Which fold holds a class, by hand: person=1, airplane=5, cat=16, toothbrush=80.
    assert 16 in inter[3] and 16 in contig[0]
    assert 5 in inter[0] and 5 in contig[0]
    assert 80 in inter[3] and 80 in contig[3]
    assert 41 in inter[0] and 41 in contig[2]


def test_coco_semantic_maps_from_instances(tmp_path):
    expected = build_coco(tmp_path)
    ds = open_dataset("coco20i", tmp_path, fold=0)
    assert ds.convention == "interleaved" and len(ds) == 4
    assert len(ds.classes) == 81 and ds.classes[0] == "others"
    assert ds.classes[1] == "person" and ds.classes[5] == "aeroplane" and ds.classes[80] == "toothbrush"
    # Images in id order although the JSON lists them 9, 3, 12, 5.
    assert [ds.image_id(i) for i in range(4)] == [f"COCO_val2014_{i:012d}" for i in (3, 5, 9, 12)]
    for i, image_id in zip(range(4), (3, 5, 9, 12)):
        image, label, _ = ds[i]
        assert image.shape == (*label.shape, 3) and label.dtype == np.int64
        if expected[image_id] is not None:
            np.testing.assert_array_equal(label, expected[image_id])
    # The polygon airplane (x 2..14, y 2..12) and the RLE toothbrush of image 3.
    label = ds[0][1]
    assert (label[3:11, 3:13] == 5).all() and (label[16:22, 4:8] == 80).all()
    assert (label[13:16, :] == 0).all() and (label[:, 15] == 0).all()
    assert set(np.unique(label)) == {0, 5, 80}


def test_coco_episodes_both_conventions(tmp_path):
    build_coco(tmp_path)
    # Index 0 = image 3 (airplane 5, toothbrush 80), 1 = image 5 (crowd dogs only),
    # 2 = image 9 (person 1, cat 16; the person crowd adds nothing), 3 = image 12 (empty).
    cases = {
        ("interleaved", 0): [(0, 5), (2, 1)],
        ("interleaved", 3): [(0, 80), (2, 16)],
        ("interleaved", 1): [],
        ("contiguous", 0): [(0, 5), (2, 1), (2, 16)],
        ("contiguous", 3): [(0, 80)],
        ("contiguous", 1): [],
    }
    for (convention, fold), episodes in cases.items():
        ds = open_dataset("coco20i", tmp_path, fold=fold, convention=convention)
        assert ds.test_classes == fold_classes(fold, convention)
        assert ds.episodes() == episodes, (convention, fold)
    contiguous = open_dataset("coco20i", tmp_path, fold=0, split="val", convention="contiguous")
    _, target, names = contiguous.episode(2)  # image 9, cat
    expected = np.zeros(target.shape, np.int64)
    expected[5:9, 6:10] = 1
    crowd_only = (ds_label := contiguous[2][1]) == 255
    expected[crowd_only] = 255
    np.testing.assert_array_equal(target, expected)
    assert names == ["others", "cat"] and (ds_label[2:14, 2:16] != 255).all()


def test_coco_hsnet_pkl_and_readable_names(tmp_path):
    build_coco(tmp_path)
    write_hsnet_coco_pkl(tmp_path, 0, {0: ["val2014/COCO_val2014_000000000009.jpg"],
                                       4: ["val2014/COCO_val2014_000000000003.jpg",
                                           "val2014/COCO_val2014_000000000005.jpg"]})
    ds = open_dataset("coco20i", tmp_path, fold=0, names="readable")
    assert ds.episodes() == [(2, 1), (0, 5), (1, 5)]  # exactly the list, class by class
    assert ds.classes[0] == "other" and ds.classes[5] == "airplane" and ds.classes[10] == "traffic light"
    # The contiguous convention never reads HSNet's (interleaved) lists.
    assert open_dataset("coco20i", tmp_path, fold=0, convention="contiguous").episodes() == [(0, 5), (2, 1), (2, 16)]
    write_hsnet_coco_pkl(tmp_path, 0, {1: ["val2014/COCO_val2014_000000000009.jpg"]})
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0)
    assert_one_line_error(e, "class 2", "fold 0")


def test_coco_pkl_with_objects_is_refused(tmp_path):
    import pickle

    build_coco(tmp_path)
    d = tmp_path / "splits/coco/val"
    d.mkdir(parents=True)
    (d / "fold0.pkl").write_bytes(pickle.dumps({0: [np.int64(3)]}))  # needs numpy to unpickle
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0)
    assert_one_line_error(e, "refusing to load numpy")


def test_coco_errors(tmp_path):
    build_coco(tmp_path)
    ann = tmp_path / "annotations/instances_val2014.json"
    good = ann.read_text()
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0, split="train")
    assert_one_line_error(e, "image folder not found", "train2014", "expected layout:")
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0, convention="blocks")
    assert_one_line_error(e, "unknown convention", "interleaved", "contiguous")
    ann.write_text(good[: len(good) // 2])
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0)
    assert_one_line_error(e, "unreadable annotation file", "instances_val2014.json", "expected layout:")
    doc = json.loads(good)
    doc["categories"] = doc["categories"][:79]
    ann.write_text(json.dumps(doc))
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0)
    assert_one_line_error(e, "80 COCO categories", "found 79")
    doc = json.loads(good)
    doc["annotations"][0]["segmentation"] = {"size": [20, 30], "counts": 7}
    ann.write_text(json.dumps(doc))
    ds = open_dataset("coco20i", tmp_path, fold=0)
    with pytest.raises(ZerosegError) as e:
        ds[2]
    assert_one_line_error(e, "unreadable segmentation", "annotation 1")
    ann.unlink()
    with pytest.raises(ZerosegError) as e:
        open_dataset("coco20i", tmp_path, fold=0)
    assert_one_line_error(e, "annotation file not found", "expected layout:")


def test_coco_accepts_hsnet_parent_folder(tmp_path):
    expected = build_coco(tmp_path / "COCO2014")
    ds = open_dataset("coco20i", tmp_path, fold=3)
    np.testing.assert_array_equal(ds[3][1], expected[12])
    assert ds.episodes() == [(0, 80), (2, 16)]


# ============================================================================ FSS-1000


def test_fss_split_data():
    doc = load_data("fss1000.json")
    trn, val, test = (set(doc[k]) for k in ("trn", "val", "test"))
    assert (len(doc["trn"]), len(doc["val"]), len(doc["test"])) == (520, 240, 240)
    assert len(trn) == 520 and len(val) == 240 and len(test) == 240
    assert not (trn & val) and not (trn & test) and not (val & test)
    assert doc["source"] and "hsnet" in doc["source"].lower()
    allc = fss_classes()
    assert len(allc) == 1000 and allc[:520] == sorted(trn) and allc[760:] == sorted(test)
    assert fss_split_classes("test")[0] == min(test)


def test_fss_items_ids_and_episodes(tmp_path):
    test_classes = fss_split_classes("test")
    first, second, late = test_classes[0], test_classes[1], test_classes[100]
    expected = build_fss(tmp_path, test_classes, {first: [1, 2, 10], second: [3], late: [5, 6]})
    ds = open_dataset("fss1000", tmp_path, split="test")
    assert ds.fold is None and ds.split == "test"
    assert len(ds.classes) == 1001 and ds.classes[0] == "others"
    assert ds.test_classes == list(range(761, 1001))
    assert ds.classes[761] == first and ds.classes[762] == second and ds.classes[861] == late
    # Sorted classes, files in lexicographic order like HSNet's sorted(glob): 1, 10, 2.
    order = [f"{first}/1", f"{first}/10", f"{first}/2", f"{second}/3", f"{late}/5", f"{late}/6"]
    assert [ds.image_id(i) for i in range(len(ds))] == order
    assert ds.episodes() == [(0, 761), (1, 761), (2, 761), (3, 762), (4, 861), (5, 861)]
    for i, key in enumerate(order):
        image, label, _ = ds[i]
        cid = ds.episodes()[i][1]
        np.testing.assert_array_equal(label, expected[key] * cid)  # 127 -> 0, 128 -> object
        assert image.shape == (*label.shape, 3)
    _, target, names = ds.episode(4)
    np.testing.assert_array_equal(target, expected[f"{late}/5"])
    assert names == ["others", late]
    readable = open_dataset("fss1000", tmp_path, split="test", fold=0, names="readable")
    assert readable.classes[0] == "other" and "_" not in readable.classes[761]


def test_fss_errors(tmp_path):
    test_classes = fss_split_classes("test")
    build_fss(tmp_path, test_classes, {test_classes[0]: [1]})
    with pytest.raises(ZerosegError) as e:
        open_dataset("fss1000", tmp_path, split="val")  # no val class folders exist
    assert_one_line_error(e, "240 class folder(s) of the val split missing", "expected layout:")
    with pytest.raises(ZerosegError) as e:
        open_dataset("fss1000", tmp_path, split="test", fold=2)
    assert_one_line_error(e, "no folds")
    (tmp_path / "FSS-1000" / test_classes[0] / "1.png").write_bytes(b"garbage")
    ds = open_dataset("fss1000", tmp_path, split="test")
    with pytest.raises(ZerosegError) as e:
        ds[0]
    assert_one_line_error(e, "unreadable mask", "1.png", "expected layout:")
    (tmp_path / "FSS-1000" / test_classes[0] / "1.png").unlink()
    with pytest.raises(ZerosegError) as e:
        ds[0]
    assert_one_line_error(e, "mask not found")
    shutil.rmtree(tmp_path / "FSS-1000" / test_classes[7])
    with pytest.raises(ZerosegError) as e:
        open_dataset("fss1000", tmp_path, split="test")
    assert_one_line_error(e, "1 class folder(s) of the test split missing", repr(test_classes[7]))


# ============================================================================ ADE20K


def test_ade_labels_classes_and_not_episodic(tmp_path):
    raw = build_ade(tmp_path)
    ds = open_dataset("ade20k", tmp_path, split="val")
    assert ds.fold is None and ds.split == "val" and len(ds) == 2
    assert len(ds.classes) == 151 and ds.classes[0] == "other"
    assert ds.classes[1] == "wall" and ds.classes[13] == "person" and ds.classes[150] == "flag"
    assert ds.test_classes == list(range(1, 151))
    for i, (stem, r) in enumerate(raw.items()):
        image, label, _ = ds[i]
        assert ds.image_id(i) == stem and image.shape == (*r.shape, 3)
        np.testing.assert_array_equal(label, np.where(r == 0, 255, r).astype(np.int64))
    assert set(np.unique(ds[0][1])) == {1, 150, 255}
    with pytest.raises(ZerosegError) as e:
        ds.episodes()
    assert_one_line_error(e, "not an episodic dataset")
    train = open_dataset("ade20k", tmp_path / "ADEChallengeData2016", split="train")
    assert len(train) == 1 and train.split == "train" and (train[0][1] == 1).all()
    assert open_dataset("ade20k", tmp_path, names="readable").classes[59] == "screen door"
    assert ds.classes[59] == "screen"  # LSeg's reading of its label file


def test_ade_errors(tmp_path):
    build_ade(tmp_path)
    base = tmp_path / "ADEChallengeData2016"
    with pytest.raises(ZerosegError) as e:
        open_dataset("ade20k", tmp_path, fold=0)
    assert_one_line_error(e, "no folds")
    (base / "annotations/validation/ADE_val_00000002.png").write_bytes(b"\x89PNG broken")
    ds = open_dataset("ade20k", tmp_path)
    with pytest.raises(ZerosegError) as e:
        ds[1]
    assert_one_line_error(e, "unreadable annotation", "ADE_val_00000002.png", "expected layout:")
    (base / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(ZerosegError) as e:
        open_dataset("ade20k", tmp_path)
    assert_one_line_error(e, "1 image(s) without annotation", "ADE_val_00000002.png")
    shutil.rmtree(base / "annotations")
    with pytest.raises(ZerosegError) as e:
        open_dataset("ade20k", tmp_path)
    assert_one_line_error(e, "folder not found", "annotations", "expected layout:")


# ============================================================================ class lists and splits


def test_class_list_data():
    assert len(voc_classes()) == 20 and len(set(voc_classes())) == 20
    assert voc_classes()[14] == "person" and voc_classes("readable")[15] == "potted plant"
    cats = coco_categories()
    assert len(cats) == 80 and len(set(COCO_NAMES)) == 80
    ids = [c["id"] for c in cats]
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO's unused ids
    assert len(set(coco_classes("lseg"))) == 80 and coco_classes("lseg")[9] == "trafficlight"
    lseg, readable = ade20k_classes("lseg"), ade20k_classes("readable")
    assert len(lseg) == 150 and len(readable) == 150 and len(set(readable)) == 150
    full = load_data("ade20k.json")["full_names"]
    # LSeg's copy writes spaces as ';': the readable first name, so written, starts each entry
    # (entry 90, whose LSeg copy starts "television;television;receiver", is the one exception).
    mismatched = [k + 1 for k, (r, f) in enumerate(zip(readable, full)) if not f.startswith(r.replace(" ", ";"))]
    assert mismatched == [90]
    assert all(f.split(";")[0] == name for f, name in zip(full, lseg))
    for name in ("pascal_voc.json", "coco.json", "fss1000.json", "ade20k.json", "coco_zsi.json"):
        assert load_data(name)["source"].strip()


@pytest.mark.parametrize("name,n_seen,n_unseen", [("48_17", 48, 17), ("65_15", 65, 15)])
def test_coco_zsi_splits(name, n_seen, n_unseen):
    split = coco_zsi_split(name)
    seen, unseen = split["seen"], split["unseen"]
    assert len(seen) == n_seen and len(unseen) == n_unseen
    assert len(set(seen)) == n_seen and len(set(unseen)) == n_unseen
    assert not set(seen) & set(unseen)
    assert set(seen) | set(unseen) <= set(COCO_NAMES)
    assert "Bansal" in split["source"] if name == "48_17" else "Rahman" in split["source"]
    if name == "65_15":
        assert set(seen) | set(unseen) == set(COCO_NAMES)
        # Rahman et al.'s unseen COCO category ids, as in the ZSI code.
        unseen_ids = sorted(c["id"] for c in coco_categories() if c["name"] in unseen)
        assert unseen_ids == [5, 7, 14, 17, 23, 33, 34, 36, 48, 54, 58, 70, 74, 80, 89]
    else:
        assert {"airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
                "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors"} == set(unseen)
        assert len(set(COCO_NAMES) - set(seen) - set(unseen)) == 15
    with pytest.raises(ZerosegError):
        coco_zsi_split("40_40")


def test_filter_coco_keeps_unseen_instances_only():
    gt = {
        "info": {"year": 2014}, "licenses": [],
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 4, "width": 4} for i in (1, 2, 3, 4)],
        "categories": [{"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 5, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 0},
            {"id": 13, "image_id": 3, "category_id": 17, "iscrowd": 1},
            {"id": 14, "image_id": 3, "category_id": 17, "iscrowd": 0},
        ],
    }
    before = copy.deepcopy(gt)
    out = filter_coco(gt, ["airplane", "cat"])
    assert gt == before  # not modified
    assert [im["id"] for im in out["images"]] == [1, 3]  # image 2 (person only) and 4 (empty) dropped
    assert [a["id"] for a in out["annotations"]] == [11, 13, 14]  # crowd kept for COCOeval
    assert [c["name"] for c in out["categories"]] == ["airplane", "cat"]
    assert out["info"] == {"year": 2014} and out["licenses"] == []
    kept_all = filter_coco(gt, ["person"], drop_images_without=False)
    assert [im["id"] for im in kept_all["images"]] == [1, 2, 3, 4]
    assert [a["id"] for a in kept_all["annotations"]] == [10, 12]
    with pytest.raises(ZerosegError) as e:
        filter_coco(gt, ["unicorn"])
    assert_one_line_error(e, "'unicorn'")
