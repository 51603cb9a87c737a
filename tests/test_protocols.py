"""Protocols: label sets, the shuffle control, and ``evaluate`` end to end on a tiny hand-made dataset."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg.data.dataset import SynthDataset
from zeroseg.errors import ZerosegError
from zeroseg.eval.protocols import (
    episode_classes,
    evaluate,
    format_summary,
    protocol_label_set,
    shuffled_names,
)

CLASSES = ["other", "cat", "dog", "car", "tree"]
SEEN, UNSEEN = ["cat", "dog"], ["car", "tree"]
# each class paints its pixels one colour, so a fake model can read the ground truth off the image
COLOURS = {0: (10, 10, 10), 1: (200, 0, 0), 2: (0, 200, 0), 3: (0, 0, 200), 4: (200, 200, 0), 255: (128, 128, 128)}
OTHER, CAT, DOG, CAR, TREE, IGN = 0, 1, 2, 3, 4, 255


def _masks() -> dict[str, np.ndarray]:
    """Four 32x32 test masks; pixel counts are used in the expected numbers below."""
    t0 = np.zeros((32, 32), np.uint8)
    t0[:16, :16], t0[16:, 16:] = CAT, CAR          # cat 256, car 256, other 512
    t1 = np.zeros((32, 32), np.uint8)
    t1[:8] = DOG                                   # dog 256, other 768 (no unseen class)
    t2 = np.zeros((32, 32), np.uint8)
    t2[:16, :8], t2[16:] = CAR, TREE               # car 128, tree 512, other 384
    t3 = np.zeros((32, 32), np.uint8)
    t3[:4], t3[4:6], t3[28:] = CAT, IGN, TREE      # cat 128, ignored 64, tree 128, other 704
    return {"t0": t0, "t1": t1, "t2": t2, "t3": t3}


def _write(root: Path, split: str, stem: str, mask: np.ndarray) -> dict:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    image = np.zeros((*mask.shape, 3), np.uint8)
    for value, colour in COLOURS.items():
        image[mask == value] = colour
    Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([c for v in range(256) for c in COLOURS.get(v, (0, 0, 0))])
    pal.save(root / split / "masks" / f"{stem}.png")
    present = [CLASSES[c] for c in np.unique(mask) if 0 < c < len(CLASSES)]
    return {"id": stem, "image": f"{split}/images/{stem}.png", "mask": f"{split}/masks/{stem}.png", "classes": present}


def make_dataset(root: Path, unseen=UNSEEN) -> Path:
    train = np.zeros((32, 32), np.uint8)
    train[:10] = CAT
    index = {
        "format": "zeroseg-synth/1", "class_list_version": "test", "classes": CLASSES,
        "seen": SEEN, "unseen": list(unseen), "image_size": 32, "seed": 0,
        "splits": {"train": [_write(root, "train", "a0", train)], "val": [],
                   "test": [_write(root, "test", k, m) for k, m in _masks().items()]},
    }
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"))


class Result:
    def __init__(self, label_map: np.ndarray, n: int):
        self.label_map = label_map
        self.probs = np.eye(n, dtype=np.float32)[label_map].transpose(2, 0, 1)


class OracleSegmenter:
    """Reads each pixel's true class from its colour and answers with the label of that *name*."""

    source = "fake-oracle"

    def __init__(self):
        self.calls: list[tuple[list[str], object]] = []
        self.by_colour = {colour: (CLASSES[v] if v < len(CLASSES) else "other") for v, colour in COLOURS.items()}

    def segment(self, image, labels, short_side=480):
        self.calls.append((list(labels), short_side))
        out = np.zeros(image.shape[:2], np.int64)
        for colour, name in self.by_colour.items():
            hit = np.all(image == np.array(colour, np.uint8), axis=-1)
            out[hit] = labels.index(name) if name in labels else 0  # unnamed classes fall to "other"
        return Result(out, len(labels))


class AllOtherSegmenter:
    def segment(self, image, labels, short_side=480):
        return Result(np.zeros(image.shape[:2], np.int64), len(labels))


# -- dataset reading --------------------------------------------------------------------------
def test_read_split(data_dir):
    data = SynthDataset(data_dir, "test")
    assert data.classes == CLASSES and data.seen == SEEN and data.unseen == UNSEEN and len(data) == 4
    image, mask = data.load(3)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(mask, _masks()["t3"].astype(np.int64))
    assert episode_classes(mask, len(CLASSES)) == [CAT, TREE]  # neither "other" nor ignore


@pytest.mark.parametrize("breakage, message", [
    ("missing", "not found"),
    ("no_index", "no index.json"),
    ("bad_json", "malformed"),
    ("bad_format", "unknown format"),
    ("bad_unseen", "seen/unseen"),
])
def test_read_split_errors(tmp_path, breakage, message):
    root = tmp_path / "d"
    if breakage != "missing":
        root.mkdir()
    if breakage == "bad_json":
        (root / "index.json").write_text("{not json")
    elif breakage in ("bad_format", "bad_unseen"):
        index = {"format": "zeroseg-synth/1" if breakage == "bad_unseen" else "coco", "classes": CLASSES,
                 "seen": SEEN, "unseen": ["car", "unicorn"], "splits": {"test": []}}
        (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ZerosegError, match=message) as err:
        SynthDataset(root, "test")
    assert "\n" not in str(err.value)


def test_unknown_split_protocol_and_control(data_dir):
    with pytest.raises(ZerosegError, match="split 'dev'"):
        SynthDataset(data_dir, "dev")
    with pytest.raises(ZerosegError, match="unknown protocol 'zsl'"):
        evaluate(AllOtherSegmenter(), data_dir, "zsl", progress=False)
    with pytest.raises(ZerosegError, match="unknown text control"):
        evaluate(AllOtherSegmenter(), data_dir, "fixed", text_control="reverse", progress=False)
    with pytest.raises(ZerosegError, match="no index.json"):
        evaluate(AllOtherSegmenter(), data_dir / "test", "fixed", progress=False)


def test_missing_image_file_is_a_zeroseg_error(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "test" / "images" / "t0.png").unlink()
    with pytest.raises(ZerosegError, match="image not found"):
        evaluate(AllOtherSegmenter(), root, "gzs", progress=False)


# -- label sets and the shuffle control ---------------------------------------------------
def test_label_sets():
    fixed = protocol_label_set("fixed", CLASSES, SEEN, UNSEEN)
    assert fixed.names == ("other", "car", "tree") and fixed.class_ids == (0, CAR, TREE)
    assert not set(SEEN) & set(fixed.names)
    gzs = protocol_label_set("gzs", CLASSES, SEEN, UNSEEN)
    assert gzs.names == ("other", "cat", "dog", "car", "tree") and gzs.class_ids == (0, CAT, DOG, CAR, TREE)
    ep = protocol_label_set("episode", CLASSES, SEEN, UNSEEN, episode_class="dog")
    assert ep.names == ("other", "dog") and ep.class_ids == (0, DOG)
    with pytest.raises(ValueError):
        protocol_label_set("episode", CLASSES, SEEN, UNSEEN)
    with pytest.raises(ZerosegError, match="unknown protocol"):
        protocol_label_set("fewshot", CLASSES, SEEN, UNSEEN)


def test_shuffle_is_a_seeded_derangement_of_unseen_names_only():
    unseen = [f"u{i}" for i in range(10)]
    mapping = shuffled_names(unseen, seed=0)
    assert list(mapping) == unseen and sorted(mapping.values()) == sorted(unseen)
    assert all(mapping[n] != n for n in unseen)  # a derangement: no class keeps its own name
    assert shuffled_names(unseen, seed=0) == mapping  # deterministic
    assert shuffled_names(unseen, seed=1) != mapping
    for seed in range(20):  # two names can only be swapped
        assert shuffled_names(["a", "b"], seed) == {"a": "b", "b": "a"}
    with pytest.raises(ZerosegError, match="at least 2 unseen"):
        shuffled_names(["a"])

    classes = ["other", "s1", "s2", *unseen]
    names = shuffled_names(unseen, seed=3)
    gzs = protocol_label_set("gzs", classes, ["s1", "s2"], unseen, name_map=names)
    assert gzs.names[:3] == ("other", "s1", "s2")  # seen names untouched
    assert gzs.names[3:] == tuple(names[u] for u in unseen)
    assert gzs.class_ids == tuple(range(len(classes)))  # ground-truth ids unchanged
    ep = protocol_label_set("episode", classes, ["s1", "s2"], unseen, episode_class="u4", name_map=names)
    assert ep.names == ("other", names["u4"]) and ep.class_ids == (0, classes.index("u4"))


# -- evaluate end to end --------------------------------------------------------------------
def test_fixed_oracle_writes_outputs(data_dir, tmp_path):
    seg = OracleSegmenter()
    out = tmp_path / "out"
    result = evaluate(seg, data_dir, "fixed", out_dir=out, progress=False)
    # t1 holds no unseen class; the others are asked about "other" + unseen names, at native size
    assert [c[0] for c in seg.calls] == [["other", "car", "tree"]] * 3
    assert all(c[1] is None for c in seg.calls)
    assert result["metrics"]["miou_unseen"] == 100.0
    assert result["per_class_iou"] == {"other": 100.0, "car": 100.0, "tree": 100.0}

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    assert saved["protocol"] == "fixed" and saved["split"] == "test" and saved["model"] == "fake-oracle"
    assert saved["num_images"] == 3 and saved["text_control"] is None
    assert saved["headline"] == {"name": "miou_unseen", "value": 100.0}
    assert saved["seconds_per_image"] >= 0
    for name in ("per_class_iou.png", "qualitative.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing behind


def test_fixed_all_other(data_dir):
    r = evaluate(AllOtherSegmenter(), data_dir, "fixed", progress=False)
    # scored pixels (seen ones ignored): other 512+384+704 = 1600, car 384, tree 640
    assert r["metrics"]["miou_unseen"] == 0.0
    assert r["per_class_iou"]["other"] == pytest.approx(100 * 1600 / 2624, abs=1e-3)
    assert r["metrics"]["pixel_accuracy"] == pytest.approx(100 * 1600 / 2624, abs=1e-3)
    assert evaluate(AllOtherSegmenter(), data_dir, "fixed", max_images=2, progress=False)["num_images"] == 2


def test_gzs(data_dir):
    seg = OracleSegmenter()
    r = evaluate(seg, data_dir, "gzs", short_side=64, progress=False)
    assert len(seg.calls) == 4 and all(c == (CLASSES, 64) for c in seg.calls)
    assert r["num_images"] == 4
    assert r["metrics"]["miou_seen"] == r["metrics"]["miou_unseen"] == r["metrics"]["hiou"] == 100.0
    assert set(r["per_class_iou"]) == set(CLASSES)

    z = evaluate(AllOtherSegmenter(), data_dir, "gzs", progress=False)["metrics"]
    assert z["miou_seen"] == z["miou_unseen"] == z["hiou"] == 0.0
    # other: 2368 target px out of 4096 - 64 ignored predicted "other"
    assert z["iou_other"] == pytest.approx(100 * 2368 / 4032, abs=1e-3)
    assert z["miou_all"] == pytest.approx(100 * 2368 / 4032 / 5, abs=1e-3)


def test_episode(data_dir, tmp_path):
    seg = OracleSegmenter()
    r = evaluate(seg, data_dir, "episode", out_dir=tmp_path, progress=False)
    # one episode per class present: t0 cat, car; t1 dog; t2 car, tree; t3 cat, tree
    assert [c[0] for c in seg.calls] == [["other", n] for n in ("cat", "car", "dog", "car", "tree", "cat", "tree")]
    assert r["num_episodes"] == {"unseen": 4, "seen": 3}
    assert r["metrics"] == {"miou_unseen": 100.0, "fbiou_unseen": 100.0, "miou_seen": 100.0, "fbiou_seen": 100.0}
    assert (tmp_path / "per_class_iou.png").is_file() and (tmp_path / "qualitative.png").is_file()

    z = evaluate(AllOtherSegmenter(), data_dir, "episode", progress=False)["metrics"]
    assert z["miou_unseen"] == z["miou_seen"] == 0.0
    # background IoU summed over episodes: unseen (768+896+512+832)/(3*1024+960); seen (768+768+832)/(2*1024+960)
    assert z["fbiou_unseen"] == pytest.approx(100 * 3008 / 4032 / 2, abs=1e-3)
    assert z["fbiou_seen"] == pytest.approx(100 * 2368 / 3008 / 2, abs=1e-3)


def test_shuffle_control_breaks_unseen_only(data_dir, tmp_path):
    fixed = evaluate(OracleSegmenter(), data_dir, "fixed", text_control="shuffle", out_dir=tmp_path, progress=False)
    # car is named "tree" and vice versa: the oracle paints each unseen class as the other one
    assert fixed["name_map"] == {"car": "tree", "tree": "car"}
    assert fixed["metrics"]["miou_unseen"] == 0.0 and fixed["per_class_iou"]["other"] == 100.0
    assert json.loads((tmp_path / "metrics.json").read_text())["text_control"] == "shuffle"

    gzs = evaluate(OracleSegmenter(), data_dir, "gzs", text_control="shuffle", progress=False)["metrics"]
    assert gzs["miou_seen"] == 100.0 and gzs["miou_unseen"] == 0.0 and gzs["hiou"] == 0.0

    seg = OracleSegmenter()
    ep = evaluate(seg, data_dir, "episode", text_control="shuffle", progress=False)["metrics"]
    assert [c[0][1] for c in seg.calls] == ["cat", "tree", "dog", "tree", "car", "cat", "car"]
    assert ep["miou_seen"] == 100.0 and ep["miou_unseen"] == 0.0
    # foreground never hit; background: (768+384+384+832) / (3*1024+960)
    assert ep["fbiou_unseen"] == pytest.approx(100 * 2368 / 4032 / 2, abs=1e-3)


def test_shuffle_needs_two_unseen_classes(tmp_path):
    root = make_dataset(tmp_path / "d", unseen=["car"])
    with pytest.raises(ZerosegError, match="at least 2 unseen"):
        evaluate(OracleSegmenter(), root, "gzs", text_control="shuffle", progress=False)


def test_wrong_sized_prediction_is_reported(data_dir):
    class Shrinking:
        def segment(self, image, labels, short_side=480):
            return Result(np.zeros((8, 8), np.int64), len(labels))

    with pytest.raises(ZerosegError, match="label map"):
        evaluate(Shrinking(), data_dir, "gzs", progress=False)


def test_format_summary(data_dir):
    text = format_summary(evaluate(OracleSegmenter(), data_dir, "gzs", progress=False))
    assert text.splitlines()[0] == "gzs on test (4 images)"
    assert "hiou" in text and "100.00" in text
