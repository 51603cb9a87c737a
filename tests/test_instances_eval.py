"""Instance metrics (pycocotools) and the ZSI / GZSI protocols, against answers computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.eval.coco_metrics import (
    decode_mask,
    encode_mask,
    evaluate_coco,
    format_instance_summary,
    harmonic_mean,
    to_coco_results,
    zsi_protocol,
)

H = W = 32


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A bool [H, W] mask of rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(n_images: int, objects: list[tuple[int, int, np.ndarray]], categories: dict[int, str]) -> dict:
    """A COCO ground truth from (image id, category id, mask); categories {id: "seen" | "unseen"}."""
    anns = []
    for i, (img, cat, mask) in enumerate(objects, 1):
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        anns.append({"id": i, "image_id": img, "category_id": cat, "segmentation": encode_mask(mask),
                     "area": int(mask.sum()), "iscrowd": 0, "bbox": box})
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(1, n_images + 1)],
            "annotations": anns,
            "categories": [{"id": c, "name": f"class {c}", "supercategory": s} for c, s in categories.items()]}


def det(img: int, cat: int, mask: np.ndarray, score: float) -> dict:
    ys, xs = np.nonzero(mask)
    box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    return to_coco_results(img, box, [score], [cat], mask[None])[0]


A, B, C = rect(2, 10, 3, 12), rect(15, 30, 1, 9), rect(0, 20, 20, 32)


# ----------------------------------------------------------------------------- masks and results


def test_rle_by_hand_and_round_trip():
    mask = np.array([[0, 1], [1, 1], [0, 0]], bool)
    # column-major runs starting with zeros: 0 | 1 | 0 | 1 1 | 0 -> [1, 1, 1, 2, 1]
    assert np.array_equal(decode_mask({"size": [3, 2], "counts": [1, 1, 1, 2, 1]}), mask)
    rle = encode_mask(mask)
    # compressed (pycocotools' rleToString): counts from the 4th on are stored as deltas to counts[i-2]
    # -> 1 1 1 (2-1) (1-1) = 1 1 1 1 0; each small value is one character, chr(48 + v)
    assert rle == {"size": [3, 2], "counts": "11110"}
    assert json.loads(json.dumps(rle)) == rle  # JSON-able: counts is a str
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (32, 48)]:
        m = rng.random(shape) < 0.4
        back = decode_mask(encode_mask(m))
        assert back.dtype == bool and np.array_equal(back, m)
    assert np.array_equal(decode_mask(encode_mask(np.zeros((4, 6), np.uint8))), np.zeros((4, 6), bool))
    with pytest.raises(ZerosegError, match=r"\[H, W\]"):
        encode_mask(np.zeros((2, 3, 4), bool))


def test_to_coco_results_converts_boxes_and_masks():
    masks = np.stack([A, B])
    res = to_coco_results(5, np.array([[3, 2, 12, 10], [1.5, 15, 9, 30]]), [0.9, 0.25], np.array([4, 7]), masks)
    assert [r["bbox"] for r in res] == [[3.0, 2.0, 9.0, 8.0], [1.5, 15.0, 7.5, 15.0]]
    assert [r["score"] for r in res] == [0.9, 0.25] and [r["category_id"] for r in res] == [4, 7]
    assert all(r["image_id"] == 5 for r in res)
    assert np.array_equal(decode_mask(res[1]["segmentation"]), B)
    json.dumps(res)
    # torch tensors work too, and boxes alone give results without segmentation
    res_t = to_coco_results(5, torch.tensor([[3.0, 2.0, 12.0, 10.0]]), torch.tensor([0.5]), torch.tensor([4]))
    assert res_t == [{"image_id": 5, "category_id": 4, "bbox": [3.0, 2.0, 9.0, 8.0], "score": 0.5}]
    assert to_coco_results(1, np.zeros((0, 4)), [], [], np.zeros((0, H, W), bool)) == []
    with pytest.raises(ZerosegError, match="2 scores"):
        to_coco_results(1, [[0, 0, 1, 1]], [0.1, 0.2], [1])
    with pytest.raises(ZerosegError, match="masks"):
        to_coco_results(1, [[0, 0, 1, 1]], [0.1], [1], np.zeros((2, H, W), bool))


def test_instances_to_coco_maps_label_ids_and_leaves_out_negative_ids():
    from zeroseg.instance_segmenter import Instances

    found = Instances(boxes=np.array([[3, 2, 12, 10], [1.5, 15, 9, 30], [0, 0, 4, 4]], np.float32),
                      scores=np.array([0.9, 0.5, 0.25], np.float32), label_ids=np.array([1, 0, 2]),
                      masks=np.stack([A, B, A]), labels=["cat", "dog", "decoy"])
    res = found.to_coco(3, category_ids=[7, 4, -1])  # "decoy" is asked, but not scored
    assert [r["category_id"] for r in res] == [4, 7] and [r["score"] for r in res] == pytest.approx([0.9, 0.5])
    assert np.array_equal(decode_mask(res[1]["segmentation"]), B)
    assert [r["category_id"] for r in found.to_coco(3)] == [2, 1, 3]  # default ids: label index + 1


# ----------------------------------------------------------------------------- evaluate_coco


def test_perfect_results_score_one():
    gt = make_gt(2, [(1, 1, A), (1, 2, B), (2, 1, C)], {1: "seen", 2: "unseen", 3: "unseen"})
    res = [det(1, 1, A, 0.9), det(1, 2, B, 0.8), det(2, 1, C, 0.7)]
    m = evaluate_coco(gt, res)
    assert m["map50"] == pytest.approx(1.0)
    assert m["recall100"] == {"0.4": 1.0, "0.5": 1.0, "0.6": 1.0}
    assert m["images"] == 2 and m["categories"] == 2 and m["instances"] == 3 and m["detections"] == 3
    # category 3 has no ground truth: reported, but not in the means
    assert m["per_category"]["class 3"]["ap50"] is None and m["per_category"]["class 1"]["instances"] == 2
    json.dumps(m)
    # boxes give the same answer
    assert evaluate_coco(gt, res, iou_type="bbox")["map50"] == pytest.approx(1.0)


def test_iou_045_matches_at_04_only():
    from pycocotools import mask as mask_utils

    gt_mask = rect(0, 10, 0, 10)  # 100 pixels
    dt_mask = rect(0, 10, 1, 20)  # 190 pixels, 90 of them inside: IoU = 90 / (100 + 190 - 90) = 0.45
    iou = mask_utils.iou([encode_mask(dt_mask)], [encode_mask(gt_mask)], [0])[0, 0]
    assert iou == 0.45
    gt = make_gt(1, [(1, 1, gt_mask)], {1: "seen"})
    m = evaluate_coco(gt, [det(1, 1, dt_mask, 0.9)])
    assert m["recall100"] == {"0.4": 1.0, "0.5": 0.0, "0.6": 0.0}
    assert m["map50"] == 0.0


def test_wrong_class_scores_zero():
    gt = make_gt(1, [(1, 1, A)], {1: "seen", 2: "seen"})
    m = evaluate_coco(gt, [det(1, 2, A, 0.99)])  # perfect mask, wrong category
    assert m["map50"] == 0.0 and m["recall100"] == {"0.4": 0.0, "0.5": 0.0, "0.6": 0.0}
    assert m["categories"] == 1  # category 2 has no ground truth and is skipped


def test_ap_of_ranked_detections_by_hand():
    gt = make_gt(1, [(1, 1, A)], {1: "seen"})
    miss = rect(20, 30, 20, 30)  # IoU 0 with A
    # a false positive ranked first: precision 1/2 at recall 1, so every recall threshold gets 0.5
    assert evaluate_coco(gt, [det(1, 1, miss, 0.9), det(1, 1, A, 0.8)])["map50"] == pytest.approx(0.5)
    # the true positive ranked first: precision 1 at recall 1
    assert evaluate_coco(gt, [det(1, 1, miss, 0.8), det(1, 1, A, 0.9)])["map50"] == pytest.approx(1.0)
    # two objects, detections TP (0.9), FP (0.8), TP (0.7): recall 1/2, 1/2, 1 with precision 1, 1/2, 2/3;
    # interpolated precision is 1 for the 51 recall thresholds 0.00..0.50 and 2/3 for the 50 above
    gt2 = make_gt(2, [(1, 1, A), (2, 1, B)], {1: "seen"})
    ap = evaluate_coco(gt2, [det(1, 1, A, 0.9), det(1, 1, miss, 0.8), det(2, 1, B, 0.7)])["map50"]
    assert ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    # a duplicate of a matched object is a false positive, but ranked after the match it costs nothing
    assert evaluate_coco(gt, [det(1, 1, A, 0.8), det(1, 1, A, 0.9)])["map50"] == pytest.approx(1.0)


def test_empty_results_give_zero():
    gt = make_gt(2, [(1, 1, A), (2, 2, B)], {1: "seen", 2: "unseen"})
    m = evaluate_coco(gt, [])
    assert m["map50"] == 0.0 and m["recall100"] == {"0.4": 0.0, "0.5": 0.0, "0.6": 0.0}
    assert m["detections"] == 0 and m["categories"] == 2
    no_gt = make_gt(1, [], {1: "seen"})
    assert evaluate_coco(no_gt, [])["map50"] is None  # nothing to measure: undefined, not 0


def test_at_most_100_detections_per_image():
    gt = make_gt(1, [(1, 1, A)], {1: "seen", 2: "unseen"})
    fps = [det(1, 2, B, 0.5 + i / 1000) for i in range(100)]  # 100 higher-scoring detections of another class
    res = fps + [det(1, 1, A, 0.1)]
    assert evaluate_coco(gt, res)["recall100"]["0.5"] == 0.0  # the 101st detection of the image is cut
    assert evaluate_coco(gt, res[1:])["recall100"]["0.5"] == 1.0  # the 100th is kept


def test_evaluate_rejects_bad_input():
    gt = make_gt(1, [(1, 1, A)], {1: "seen"})
    with pytest.raises(ZerosegError, match="image ids"):
        evaluate_coco(gt, [det(7, 1, A, 0.5)])
    with pytest.raises(ZerosegError, match="category ids"):
        evaluate_coco(gt, [], category_ids=[9])
    with pytest.raises(ZerosegError, match="segmentation"):
        evaluate_coco(gt, to_coco_results(1, [[0, 0, 4, 4]], [0.5], [1]))
    with pytest.raises(ZerosegError, match="COCO dict"):
        evaluate_coco({"images": []}, [])


# ----------------------------------------------------------------------------- ZSI / GZSI


@pytest.fixture()
def zsi_case():
    """Image 1: seen only; image 2: seen + unseen (cat 2); image 3: unseen (cat 3) only."""
    gt = make_gt(3, [(1, 1, A), (2, 1, C), (2, 2, B), (3, 3, A)], {1: "seen", 2: "unseen", 3: "unseen"})
    res = [det(1, 1, A, 0.9), det(2, 1, C, 0.8),  # seen: perfect
           det(1, 2, B, 0.95),  # unseen class on the seen-only image: a false positive, outside ZSI's images
           det(2, 2, B, 0.9)]  # unseen: found; cat 3 on image 3 missed
    return gt, res


def test_zsi_drops_seen_images_and_categories(zsi_case):
    gt, res = zsi_case
    z = zsi_protocol(gt, res, [1], [2, 3], "zsi")
    assert z["mode"] == "zsi" and z["images"] == 2  # image 1 has no unseen instance
    assert set(z["unseen"]["per_category"]) == {"class 2", "class 3"}
    assert z["unseen"]["instances"] == 2 and z["unseen"]["detections"] == 1  # the image-1 detection is gone
    # cat 2: AP 1 (its false positive was on image 1); cat 3: 0
    assert z["map50"] == pytest.approx(0.5) and z["unseen"]["map50"] == z["map50"]
    assert z["recall100"] == {"0.4": 0.5, "0.5": 0.5, "0.6": 0.5}
    json.dumps(z)


def test_gzsi_seen_unseen_and_harmonic_mean(zsi_case):
    gt, res = zsi_case
    g = zsi_protocol(gt, res, [1], [2, 3], "gzsi")
    assert g["mode"] == "gzsi" and g["images"] == 3
    assert g["seen"]["map50"] == pytest.approx(1.0)
    # cat 2: FP (0.95) then TP (0.9) -> AP 0.5; cat 3: 0 -> unseen mAP 0.25
    assert g["unseen"]["map50"] == pytest.approx(0.25)
    assert g["hm"]["map50"] == pytest.approx(2 * 1.0 * 0.25 / 1.25)
    assert g["unseen"]["recall100"]["0.5"] == 0.5
    assert g["hm"]["recall100"]["0.5"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    json.dumps(g)
    text = format_instance_summary(g)
    assert "GZSI" in text and "HM" in text and "40.0" in text and "25.0" in text and "66.7" in text
    assert "50.0" in format_instance_summary(zsi_protocol(gt, res, [1], [2, 3], "zsi"))


def test_gzsi_caps_detections_over_all_categories():
    gt = make_gt(1, [(1, 1, A)], {1: "seen", 2: "unseen"})
    res = [det(1, 2, B, 0.5 + i / 1000) for i in range(100)] + [det(1, 1, A, 0.1)]
    # the seen detection is the image's 101st: the detector's budget of 100 is spent on unseen ones
    assert zsi_protocol(gt, res, [1], [2], "gzsi")["seen"]["recall100"]["0.5"] == 0.0


def test_protocols_with_empty_results(zsi_case):
    gt, _ = zsi_case
    z = zsi_protocol(gt, [], [1], [2, 3], "zsi")
    assert z["map50"] == 0.0 and z["recall100"]["0.4"] == 0.0
    g = zsi_protocol(gt, [], [1], [2, 3], "gzsi")
    assert g["hm"] == {"map50": 0.0, "recall100": {"0.4": 0.0, "0.5": 0.0, "0.6": 0.0}}


def test_protocol_arguments(zsi_case):
    gt, res = zsi_case
    with pytest.raises(ZerosegError, match="unknown instance protocol"):
        zsi_protocol(gt, res, [1], [2, 3], "open-world")
    with pytest.raises(ZerosegError, match="overlap"):
        zsi_protocol(gt, res, [1, 2], [2, 3], "gzsi")
    assert harmonic_mean(0.5, None) is None and harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.2, 0.6) == pytest.approx(0.3)
