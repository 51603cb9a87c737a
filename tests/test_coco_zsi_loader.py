"""CocoZsiInstances on tiny COCO 2014 fixtures (tests/dataset_fixtures.py's build_coco, plus a few images).

Known answers by construction: which images each part keeps follows from the classes drawn in
each image; masks are hand-made rectangles / L-shapes, so boxes and labels are exact.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_fixtures import box, build_coco, rgb, rle_compressed, rle_uncompressed, save_jpg

from zeroseg.data.datasets.coco_zsi import CocoZsiInstances, coco_zsi_split, decode_segmentation, mask_box
from zeroseg.errors import ZerosegError

CAT = {"person": 1, "bus": 6, "traffic light": 10, "cat": 17, "dog": 18, "zebra": 24, "bench": 15,
       "airplane": 5, "toothbrush": 90}


def zebra_mask() -> np.ndarray:
    """An L shape (not symmetric left-right): rows 11..17 of columns 15..16, plus row 17 up to column 21."""
    m = np.zeros((20, 24), bool)
    m[11:18, 15:17] = True
    m[17, 15:22] = True
    return m


def extend_coco(root: Path, split: str = "val") -> None:
    """build_coco's four images (ids 9, 3, 12, 5) plus images 30-34 below, in the same JSON."""
    build_coco(root, split)
    tag = f"{split}2014"
    path = root / "annotations" / f"instances_{tag}.json"
    gt = json.loads(path.read_text())
    next_id = iter(range(100, 200))

    def image(image_id: int, h: int, w: int) -> None:
        name = f"COCO_{tag}_{image_id:012d}.jpg"
        gt["images"].append({"id": image_id, "file_name": name, "height": h, "width": w, "license": 1})
        save_jpg(root / tag / name, rgb(h, w, (image_id * 7 % 255, 30, 200)))

    def ann(image_id: int, name: str, seg, area: float, crowd: int = 0) -> None:
        gt["annotations"].append({"id": next(next_id), "image_id": image_id, "category_id": CAT[name],
                                  "segmentation": seg, "area": area, "bbox": [0, 0, 1, 1], "iscrowd": crowd})

    # 30 (20x24): a person polygon, a zebra L-shape (uncompressed RLE), a crowd of people, and a
    # bench whose RLE is empty although its recorded area is not (skipped at read time).
    image(30, 20, 24)
    ann(30, "person", [[2.0, 3.0, 10.0, 3.0, 10.0, 9.0, 2.0, 9.0]], 48.0)
    ann(30, "bench", rle_compressed(np.zeros((20, 24), bool)), 5.0)
    ann(30, "zebra", rle_uncompressed(zebra_mask()), float(zebra_mask().sum()))
    ann(30, "person", rle_uncompressed(box(20, 24, 12, 20, 0, 8)), 64.0, crowd=1)
    # 31 (16x16): a person and a crowd of dogs (dog is unseen in 48/17, seen in 65/15).
    image(31, 16, 16)
    ann(31, "person", rle_compressed(box(16, 16, 1, 5, 1, 5)), 16.0)
    ann(31, "dog", rle_compressed(box(16, 16, 8, 15, 8, 15)), 49.0, crowd=1)
    # 32 (16x16): a traffic light only (in neither list of 48/17, seen in 65/15).
    image(32, 16, 16)
    ann(32, "traffic light", rle_compressed(box(16, 16, 2, 6, 3, 5)), 8.0)
    # 33 (16x16): a person of area 0 only (an empty mask): no instance.
    image(33, 16, 16)
    ann(33, "person", rle_compressed(np.zeros((16, 16), bool)), 0.0)
    # 34 (12x12): a bus (unseen in 48/17, seen in 65/15).
    image(34, 12, 12)
    ann(34, "bus", rle_compressed(box(12, 12, 2, 10, 1, 11)), 80.0)
    path.write_text(json.dumps(gt))


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    extend_coco(root, "val")
    extend_coco(root, "train")
    return root


def ids(ds: CocoZsiInstances) -> list[int]:
    return [ds.image_id(i) for i in range(len(ds))]


def item_of(ds: CocoZsiInstances, image_id: int) -> int:
    return ids(ds).index(image_id)


def assert_one_line(excinfo, *fragments: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


# ============================================================================ which images, which classes


@pytest.mark.parametrize("zsi_split, part, expected", [
    # 48/17: cat (9), airplane (3), bus (34) and a crowd of dogs (31) are unseen; traffic light (32) unused.
    ("48_17", "seen", [30]),
    ("48_17", "unseen", [3, 9, 34]),
    ("48_17", "all", [3, 9, 30, 31, 34]),
    # 65/15: cat and airplane unseen; dog, bus and traffic light seen.
    ("65_15", "seen", [30, 31, 32, 34]),
    ("65_15", "unseen", [3, 9]),
    ("65_15", "all", [3, 9, 30, 31, 32, 34]),
])
def test_images_kept_per_part(coco, zsi_split, part, expected):
    for split in ("val", "train"):
        ds = CocoZsiInstances(coco, split, zsi_split, part)
        assert ids(ds) == expected
        assert len(ds) == len(expected)


def test_names_and_category_ids_follow_the_split(coco):
    s = coco_zsi_split("48_17")
    seen = CocoZsiInstances(coco, "val", "48_17", "seen")
    unseen = CocoZsiInstances(coco, "val", "48/17", "unseen")
    both = CocoZsiInstances(coco, "val", "48_17", "all")
    assert seen.names == s["seen"] and len(seen.names) == 48
    assert unseen.names == s["unseen"] and len(unseen.names) == 17
    assert both.names == s["seen"] + s["unseen"]
    assert seen.category_ids[0] == 1 and both.category_ids[48 + 2] == CAT["cat"]  # person; cat is 3rd unseen


def test_labels_are_positions_and_crowds_are_skipped(coco):
    # 48/17 "all", image 9: cat (annotation 1, unseen position 2 -> 48 + 2 + 1) then person (seen 0 -> 1);
    # its crowd of people is not an instance.
    ds = CocoZsiInstances(coco, "val", "48_17", "all")
    _, t = ds[item_of(ds, 9)]
    assert t["labels"].tolist() == [51, 1]
    assert ds.names[50] == "cat" and ds.names[0] == "person"
    assert t["boxes"].tolist() == [[6, 5, 10, 9], [2, 2, 16, 14]]
    assert torch.equal(t["masks"][0], torch.from_numpy(box(20, 30, 5, 9, 6, 10).astype(np.uint8)))
    assert torch.equal(t["masks"][1], torch.from_numpy(box(20, 30, 2, 14, 2, 16).astype(np.uint8)))
    # 48/17 "unseen", image 9: only the cat, now unseen position 2 -> label 3.
    un = CocoZsiInstances(coco, "val", "48_17", "unseen")
    assert un[item_of(un, 9)][1]["labels"].tolist() == [3]


def test_polygon_and_rle_instances_are_exact(coco):
    ds = CocoZsiInstances(coco, "train", "48_17", "seen")
    assert ids(ds) == [30]
    image, instances = ds.load(0)
    assert image.dtype == np.uint8 and image.shape == (20, 24, 3)
    # person polygon (2,3)-(10,9): columns 2..9, rows 3..8; the empty bench and the crowd are left out.
    assert [pos for pos, _ in instances] == [0, 12]
    assert ds.names[12] == "zebra"
    assert np.array_equal(instances[0][1], box(20, 24, 3, 9, 2, 10))
    assert np.array_equal(instances[1][1], zebra_mask())

    x, t = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 20, 24)
    assert torch.equal(x, torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255)
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [1, 13]
    assert t["boxes"].dtype == torch.float32 and t["boxes"].tolist() == [[2, 3, 10, 9], [15, 11, 22, 18]]
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, 20, 24)
    assert t["masks"].sum().item() == 48 + 7 * 2 + 5


def test_polygon_in_build_coco_and_65_15_unseen(coco):
    # Image 3's airplane polygon (2,2)-(14,12): columns 2..13, rows 2..11; its toothbrush is seen.
    ds = CocoZsiInstances(coco, "val", "65_15", "unseen")
    _, t = ds[item_of(ds, 3)]
    assert t["labels"].tolist() == [1] and ds.names[0] == "airplane"
    assert t["boxes"].tolist() == [[2, 2, 14, 12]]
    assert torch.equal(t["masks"][0].bool(), torch.from_numpy(box(24, 16, 2, 12, 2, 14)))


def test_decode_segmentation_forms_agree():
    m = zebra_mask()
    assert np.array_equal(decode_segmentation(rle_uncompressed(m), 20, 24), m)
    assert np.array_equal(decode_segmentation(rle_compressed(m), 20, 24), m)
    two = decode_segmentation([[0, 0, 3, 0, 3, 2, 0, 2], [5, 5, 7, 5, 7, 8, 5, 8]], 10, 10)
    assert np.array_equal(two, box(10, 10, 0, 2, 0, 3) | box(10, 10, 5, 8, 5, 7))
    assert not decode_segmentation([], 4, 4).any()
    assert mask_box(m) == [15.0, 11.0, 22.0, 18.0]
    with pytest.raises(ValueError):
        decode_segmentation(rle_compressed(m), 24, 20)  # size differs from the image


# ============================================================================ flips


def test_hflip_flips_image_masks_and_boxes_together(coco):
    plain = CocoZsiInstances(coco, "val", "65_15", "seen")
    ds = CocoZsiInstances(coco, "val", "65_15", "seen", hflip=True, seed=3)
    seen_flip = seen_plain = False
    for epoch in range(12):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x0, t0 = plain[i]
            x, t = ds[i]
            flip = np.random.default_rng([3, epoch, i]).random() < 0.5
            assert ds.flips(i) == flip
            if not flip:
                seen_plain = True
                assert torch.equal(x, x0) and all(torch.equal(t[k], t0[k]) for k in t0)
                continue
            seen_flip = True
            w = x.shape[2]
            assert torch.equal(x, x0.flip(2))
            assert torch.equal(t["masks"], t0["masks"].flip(2))
            assert torch.equal(t["labels"], t0["labels"])
            # A flipped box is the box of the flipped mask, and mirrors the original box.
            for b, m, b0 in zip(t["boxes"].tolist(), t["masks"].numpy(), t0["boxes"].tolist()):
                assert b == mask_box(m.astype(bool))
                assert b == [w - b0[2], b0[1], w - b0[0], b0[3]]
    assert seen_flip and seen_plain


def test_flips_are_deterministic_per_seed_epoch_and_index(coco):
    a = CocoZsiInstances(coco, "val", "65_15", "all", hflip=True, seed=7)
    b = CocoZsiInstances(coco, "val", "65_15", "all", hflip=True, seed=7)
    c = CocoZsiInstances(coco, "val", "65_15", "all", hflip=True, seed=8)
    table = {}
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        c.set_epoch(epoch)
        for i in range(len(a)):
            assert a.flips(i) == b.flips(i)
            table[epoch, i] = (a.flips(i), c.flips(i))
            assert torch.equal(a[i][1]["boxes"], b[i][1]["boxes"])
    assert len({v[0] for v in table.values()}) == 2  # the epoch changes the draw
    assert any(x != y for x, y in table.values())  # so does the seed
    a.set_epoch(3)
    assert [a.flips(i) for i in range(len(a))] == [table[3, i][0] for i in range(len(a))]  # order-free
    assert not CocoZsiInstances(coco, "val", "65_15", "all").flips(0)  # hflip off: never


def test_same_items_in_dataloader_workers(coco):
    ds = CocoZsiInstances(coco, "val", "65_15", "all", hflip=True, seed=1)
    ds.set_epoch(2)
    direct = [ds[i][1]["boxes"] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda b: b)
    got = [t["boxes"] for batch in loader for _, t in batch]
    assert all(torch.equal(g, d) for g, d in zip(got, direct)) and len(got) == len(direct)


# ============================================================================ errors and paths


def test_missing_or_unreadable_files(tmp_path):
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path / "nowhere")
    assert_one_line(e, "dataset root not found", "expected layout:", "instances_{train,val}2014.json")
    extend_coco(tmp_path, "val")
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path, "train")
    assert_one_line(e, "annotation file not found", "instances_train2014.json", "expected layout:")

    ann = tmp_path / "annotations" / "instances_val2014.json"
    good = ann.read_text()
    ann.write_text(good[:100])
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path, "val")
    assert_one_line(e, "unreadable annotation file", "expected layout:")
    ann.write_text(json.dumps({"images": []}))
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path, "val")
    assert_one_line(e, "not a COCO instance file")
    gt = json.loads(good)
    gt["categories"] = [c for c in gt["categories"] if c["name"] != "toaster"]
    ann.write_text(json.dumps(gt))
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path, "val", "65_15")
    assert_one_line(e, "lacks categories", "'toaster'")
    ann.write_text(good)

    ds = CocoZsiInstances(tmp_path, "val", "48_17", "all")
    (tmp_path / "val2014" / "COCO_val2014_000000000009.jpg").unlink()
    with pytest.raises(ZerosegError) as e:
        ds[item_of(ds, 9)]
    assert_one_line(e, "image not found", "COCO_val2014_000000000009.jpg", "expected layout:")
    (tmp_path / "val2014" / "COCO_val2014_000000000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ZerosegError) as e:
        ds.load(item_of(ds, 3))
    assert_one_line(e, "COCO_val2014_000000000003.jpg", "expected layout:")
    save_jpg(tmp_path / "val2014" / "COCO_val2014_000000000034.jpg", rgb(10, 12, (1, 2, 3)))
    with pytest.raises(ZerosegError) as e:
        ds[item_of(ds, 34)]
    assert_one_line(e, "is 12x10", "says 12x12")
    shutil.rmtree(tmp_path / "val2014")
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(tmp_path, "val")
    assert_one_line(e, "image folder not found", "val2014", "expected layout:")


def test_bad_arguments_and_indices(coco):
    for kwargs, fragment in [({"split": "test2015"}, "unknown split"), ({"part": "novel"}, "unknown part"),
                             ({"zsi_split": "40_40"}, "unknown COCO zero-shot split")]:
        with pytest.raises(ZerosegError) as e:
            CocoZsiInstances(coco, **kwargs)
        assert_one_line(e, fragment)
    ds = CocoZsiInstances(coco, "val", "48_17", "seen")
    with pytest.raises(IndexError):
        ds[1]
    assert ds.image_id(-1) == 30


def test_path_overrides_and_coco2014_folder(tmp_path):
    extend_coco(tmp_path / "COCO2014", "val")
    assert ids(CocoZsiInstances(tmp_path, "val", "48_17", "seen")) == [30]  # root holding COCO2014/
    custom = tmp_path / "custom"
    (custom / "ann").mkdir(parents=True)
    shutil.copy(tmp_path / "COCO2014/annotations/instances_val2014.json", custom / "ann" / "gt.json")
    shutil.copytree(tmp_path / "COCO2014/val2014", custom / "pics")
    ds = CocoZsiInstances(custom, "train", "48_17", "seen", annotations="ann/gt.json", images="pics")
    assert ids(ds) == [30] and ds[0][1]["labels"].tolist() == [1, 13]
    with pytest.raises(ZerosegError) as e:
        CocoZsiInstances(custom, "train", annotations="ann/missing.json", images="pics")
    assert_one_line(e, "annotation file not found", "missing.json")
