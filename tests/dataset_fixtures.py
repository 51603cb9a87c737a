"""Tiny copies of the real benchmarks' on-disk formats, built in a test's tmp_path.

Each builder writes a few small images in the exact folder/file layout, file types and PNG modes
of the real dataset and returns the label maps it wrote (the known answers), so tests can check
what the loaders read back.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- common


def rgb(h: int, w: int, color: tuple[int, int, int]) -> np.ndarray:
    """A flat-colour image (JPEG keeps flat colours within a few levels)."""
    return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, 3)).copy()


def save_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), as stored in VOC's palette PNGs."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def save_label_png(path: Path, label: np.ndarray, mode: str) -> None:
    """An index PNG: mode "P" with the VOC palette (VOC's own masks) or "L" (SBD-aug, ADE20K)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8))
    if mode == "P":
        im.putpalette(voc_palette())  # on an "L" image this makes it "P" with the indices unchanged
    assert im.mode == mode
    im.save(path)


# ----------------------------------------------------------------------------- PASCAL-5i

PASCAL_NAMES = ["2007_000032", "2007_000039", "2008_000123", "2009_000001"]


def pascal_labels() -> dict[str, np.ndarray]:
    """Hand-made VOC label maps: which classes each image holds is the known answer."""
    a = np.zeros((24, 32), np.int64)
    a[2:10, 3:15] = 1  # aeroplane (fold 0)
    a[12:20, 18:30] = 7  # car (fold 1)
    a[0, :] = 255  # object boundary / ignore band
    b = np.zeros((20, 28), np.int64)
    b[5:15, 5:12] = 3  # bird (fold 0)
    b[4:16, 15:25] = 15  # person (fold 2)
    b[4:16, 14] = 255
    c = np.zeros((16, 16), np.int64)
    c[3:12, 3:12] = 12  # dog (fold 2)
    d = np.zeros((30, 20), np.int64)
    d[10, 10] = 2  # a single bicycle pixel (fold 0)
    d[15:28, 2:18] = 5  # bottle (fold 0)
    d[29, :] = 255
    return dict(zip(PASCAL_NAMES, [a, b, c, d]))


def build_pascal(root: Path, with_lists: bool = False) -> dict[str, np.ndarray]:
    """HSNet's Datasets_HSN layout: VOC2012/{JPEGImages,SegmentationClassAug,ImageSets/Segmentation}."""
    voc = root / "VOC2012"
    labels = pascal_labels()
    for k, (name, label) in enumerate(labels.items()):
        h, w = label.shape
        save_jpg(voc / "JPEGImages" / f"{name}.jpg", rgb(h, w, (40 * k + 20, 100, 200 - 30 * k)))
        # Two masks as VOC palette PNGs, two as grey PNGs: both forms are in circulation.
        save_label_png(voc / "SegmentationClassAug" / f"{name}.png", label, "P" if k % 2 == 0 else "L")
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("\n".join(PASCAL_NAMES) + "\n")
    (sets / "train.txt").write_text("\n".join(PASCAL_NAMES[:2]) + "\n")
    if with_lists:
        d = root / "splits" / "pascal" / "val"
        d.mkdir(parents=True)
        # HSNet's format "<name>__<2-digit class>", in its own (not sorted) order.
        (d / "fold0.txt").write_text("2007_000039__03\n2009_000001__05\n2007_000032__01\n")
    return labels


# ----------------------------------------------------------------------------- COCO-20i

COCO_CATEGORIES = json.loads(
    (Path(__file__).resolve().parents[1] / "src/zeroseg/data/datasets/coco.json").read_text())["categories"]


def rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a 0-run."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_compressed(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def build_coco(root: Path, split: str = "val") -> dict[int, np.ndarray]:
    """COCO 2014 layout with an instances JSON; returns {image id: expected semantic map}.

    Class index = position of the category in id order + 1 (person 1, airplane 5, cat 16, dog 17,
    toothbrush 80). Images are listed out of id order on purpose.
    """
    tag = f"{split}2014"
    images, anns, expected = [], [], {}
    aid = iter(range(1, 100))

    def add_image(image_id: int, h: int, w: int) -> None:
        name = f"COCO_{tag}_{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "height": h, "width": w, "license": 1})
        save_jpg(root / tag / name, rgb(h, w, (image_id * 10 % 255, 90, 160)))

    def add_ann(image_id: int, cat: int, seg, area: float, crowd: int = 0) -> None:
        anns.append({"id": next(aid), "image_id": image_id, "category_id": cat, "segmentation": seg,
                     "area": area, "bbox": [0, 0, 1, 1], "iscrowd": crowd})

    # Image 9 (20x30): a big person, a small cat on top of it (painted later: smaller area),
    # a crowd of people partly over the person instance (the instance wins there).
    h, w = 20, 30
    add_image(9, h, w)
    person = box(h, w, 2, 14, 2, 16)
    cat = box(h, w, 5, 9, 6, 10)
    crowd = box(h, w, 10, 19, 12, 28)
    add_ann(9, 17, rle_uncompressed(cat), float(cat.sum()))  # cat first: order in the file must not matter
    add_ann(9, 1, rle_compressed(person), float(person.sum()))
    add_ann(9, 1, rle_uncompressed(crowd), float(crowd.sum()), crowd=1)
    e = np.zeros((h, w), np.int64)
    e[crowd] = 255
    e[person] = 1
    e[cat] = 16
    expected[9] = e

    # Image 3 (24x16): an airplane given as a polygon, a toothbrush as compressed RLE.
    h, w = 24, 16
    add_image(3, h, w)
    add_ann(3, 5, [[2.0, 2.0, 14.0, 2.0, 14.0, 12.0, 2.0, 12.0]], 120.0)
    tooth = box(h, w, 16, 22, 4, 8)
    add_ann(3, 90, rle_compressed(tooth), float(tooth.sum()))
    expected[3] = None  # polygon edges are rasterized by pycocotools; checked by interior/exterior

    # Image 12 (16x16): no annotation at all.
    add_image(12, 16, 16)
    expected[12] = np.zeros((16, 16), np.int64)

    # Image 5 (18x18): only a crowd of dogs -> ignore, and no episode.
    h, w = 18, 18
    add_image(5, h, w)
    dogs = box(h, w, 4, 12, 4, 14)
    add_ann(5, 18, rle_uncompressed(dogs), float(dogs.sum()), crowd=1)
    e = np.zeros((h, w), np.int64)
    e[dogs] = 255
    expected[5] = e

    gt = {"info": {"description": "tiny COCO-format fixture"}, "licenses": [{"id": 1, "name": "test"}],
          "images": images, "annotations": anns,
          "categories": [{"supercategory": "x", "id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES][::-1]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{tag}.json").write_text(json.dumps(gt))
    return expected


def write_hsnet_coco_pkl(root: Path, fold: int, table: dict[int, list[str]]) -> None:
    """HSNet's splits/coco/val/fold<i>.pkl: {0-based class: ['val2014/<file>', ...]} for all 80 classes."""
    d = root / "splits" / "coco" / "val"
    d.mkdir(parents=True, exist_ok=True)
    full = {k: list(table.get(k, [])) for k in range(80)}
    with open(d / f"fold{fold}.pkl", "wb") as f:
        pickle.dump(full, f)


# ----------------------------------------------------------------------------- FSS-1000


def build_fss(root: Path, split_classes: list[str], filled: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """FSS-1000/<class>/<n>.jpg + <n>.png for every class of a split; only ``filled`` classes get images.

    Masks are grey PNGs with 0/255 and a column of 127 and one of 128 (HSNet thresholds at 128).
    Returns {"<class>/<n>": expected binary mask (1 = object)}.
    """
    base = root / "FSS-1000"
    expected = {}
    for name in split_classes:
        (base / name).mkdir(parents=True, exist_ok=True)
    for name, numbers in filled.items():
        for n in numbers:
            h, w = 20 + n, 24
            save_jpg(base / name / f"{n}.jpg", rgb(h, w, (n * 20, 50, 90)))
            mask = np.zeros((h, w), np.uint8)
            mask[4:4 + n, 5:15] = 255
            mask[:, 20] = 127
            mask[:, 21] = 128
            Image.fromarray(mask).save(base / name / f"{n}.png")
            expected[f"{name}/{n}"] = (mask >= 128).astype(np.int64)
    return expected


# ----------------------------------------------------------------------------- ADE20K


def build_ade(root: Path) -> dict[str, np.ndarray]:
    """ADEChallengeData2016/{images,annotations}/validation with grey label PNGs (0 = unlabeled)."""
    base = root / "ADEChallengeData2016"
    raw = {}
    a = np.zeros((20, 30), np.uint8)
    a[:10] = 1  # wall
    a[10:, :15] = 150  # flag
    a[10:, 15:] = 0  # unlabeled
    b = np.full((16, 24), 13, np.uint8)  # person
    b[0, 0] = 0
    raw["ADE_val_00000001"] = a
    raw["ADE_val_00000002"] = b
    for k, (stem, label) in enumerate(raw.items()):
        h, w = label.shape
        save_jpg(base / "images" / "validation" / f"{stem}.jpg", rgb(h, w, (30, 60 * k + 20, 90)))
        save_label_png(base / "annotations" / "validation" / f"{stem}.png", label, "L")
    # A training image too, so the split choice is visible.
    save_jpg(base / "images" / "training" / "ADE_train_00000001.jpg", rgb(8, 8, (1, 2, 3)))
    save_label_png(base / "annotations" / "training" / "ADE_train_00000001.png", np.ones((8, 8), np.uint8), "L")
    return raw
