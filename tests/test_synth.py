"""The synthetic OpenMoji benchmark: class list, rendering, on-disk format, determinism, dataset reader."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg.data import synth
from zeroseg.errors import ZerosegError

N = 8
SIZE = 96
SEED = 3


def _generate(out: Path, **kw) -> dict:
    args = dict(n_train=N, n_val=N, n_test=N, size=SIZE, seed=SEED, progress=False, workers=1)
    args.update(kw)
    return synth.generate(out, **args)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "bench"
    return out, _generate(out)


def _index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mask(root: Path, entry: dict) -> np.ndarray:
    with Image.open(root / entry["mask"]) as im:
        assert im.mode == "P"
        return np.asarray(im)


# ----------------------------------------------------------------------------- class list


def test_class_list_is_curated_and_split():
    doc = json.loads((Path(synth.__file__).parent / "classes.json").read_text())
    assert isinstance(doc["version"], str) and doc["version"] == synth.class_list_version()
    assert "CC BY-SA 4.0" in doc["license"] and "openmoji.org" in doc["attribution"]
    classes = synth.load_class_list()
    names = [c["name"] for c in classes]
    assert len(classes) >= 120
    assert len(set(names)) == len(names) and "other" not in names
    assert all(n == n.lower().strip() and n.isascii() and n for n in names)
    assert len({c["group"] for c in classes}) >= 6
    seen, unseen = synth.seen_classes(), synth.unseen_classes()
    assert len(unseen) >= 20 and len(seen) + len(unseen) == len(classes)
    assert set(seen) | set(unseen) == set(names) and not set(seen) & set(unseen)
    for c in classes:
        assert c["split"] in ("seen", "unseen")
        # names come from Unicode: the recorded name is the codepoint's, and plain names are its lower case
        chars = "".join(chr(int(cp, 16)) for cp in c["codepoints"])
        assert unicodedata.name(chars) == c["unicode_name"]
        if c["split"] == "unseen":
            assert c["related_seen"] in seen, c  # every unseen class has a related seen class
        else:
            assert "related_seen" not in c


def test_class_list_has_no_variant_glyphs():
    classes = synth.load_class_list()
    cps = [cp for c in classes for cp in c["codepoints"]]
    assert len(set(cps)) == len(cps)
    # no skin-tone modifiers, ZWJ sequences or variation selectors: one distinct glyph per class
    assert all(len(c["codepoints"]) == 1 for c in classes)
    assert not {int(cp, 16) for cp in cps} & ({0x200D, 0xFE0F} | set(range(0x1F3FB, 0x1F400)))


def test_load_class_list_returns_copies():
    a = synth.load_class_list()
    a[0]["name"] = "changed"
    assert synth.load_class_list()[0]["name"] != "changed"


def test_every_glyph_renders_in_colour():
    classes = synth.load_class_list()
    coloured = 0
    for c in classes:
        glyph = np.asarray(synth.render_glyph(tuple(c["codepoints"]), 48))
        assert max(glyph.shape[:2]) >= 0.6 * 48, c["name"]  # about one em, as drawn by the font
        opaque = glyph[..., 3] >= 128
        assert opaque.sum() >= 0.1 * opaque.size, c["name"]  # cropped to content, not an empty box
        coloured += len(np.unique(glyph[opaque][:, :3] // 32, axis=0)) >= 3
    # the COLR font draws in colour (a few emoji, e.g. the snowflake, are black line art only)
    assert coloured >= 0.95 * len(classes)


# ----------------------------------------------------------------------------- scenes


def test_render_scene_shapes_and_required_class():
    names = synth.seen_classes()
    required = synth.unseen_classes()[0]
    all_names = ["other"] + [c["name"] for c in synth.load_class_list()]
    fractions = []
    for i in range(12):
        rng = np.random.default_rng(i)
        image, label, present = synth.render_scene(rng, names, 128, required=required)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert label.shape == (128, 128) and label.dtype == np.uint8
        assert required in present and 1 <= len(present) <= 4
        assert set(present) <= set(names) | {required}
        assert present == [all_names[v] for v in np.unique(label) if v]
        fractions.append((label > 0).mean())
        assert image.std() > 5  # a background was drawn, not a flat fill
    assert np.mean(fractions) > 0.12  # objects are big enough to learn from


def test_render_scene_is_deterministic_per_rng():
    a = synth.render_scene(np.random.default_rng(7), synth.seen_classes(), 64)
    b = synth.render_scene(np.random.default_rng(7), synth.seen_classes(), 64)
    c = synth.render_scene(np.random.default_rng(8), synth.seen_classes(), 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


# ----------------------------------------------------------------------------- generation


def test_generate_writes_contract_layout(bench):
    root, summary = bench
    assert summary["images"] == 3 * N and summary["out"] == str(root)
    assert summary["classes"] == len(synth.load_class_list())
    assert summary["seen"] == len(synth.seen_classes()) and summary["unseen"] == len(synth.unseen_classes())
    assert summary["images_per_second"] > 0 and summary["seconds"] >= 0
    index = _index(root)
    assert index["format"] == "zeroseg-synth/1"
    assert index["class_list_version"] == synth.class_list_version()
    assert index["classes"] == ["other"] + [c["name"] for c in synth.load_class_list()]
    assert index["seen"] == synth.seen_classes() and index["unseen"] == synth.unseen_classes()
    assert index["image_size"] == SIZE and index["seed"] == SEED
    assert set(index["splits"]) == {"train", "val", "test"}
    for split, entries in index["splits"].items():
        assert len(entries) == N
        assert len({e["id"] for e in entries}) == N
        for e in entries:
            assert e["image"] == f"{split}/images/{e['id']}.png" and e["mask"] == f"{split}/masks/{e['id']}.png"
            with Image.open(root / e["image"]) as im:
                assert im.mode == "RGB" and im.size == (SIZE, SIZE) and im.format == "PNG"
            assert _mask(root, e).shape == (SIZE, SIZE)
    assert not list(root.rglob("*.tmp"))


def test_masks_match_entries(bench):
    root, _ = bench
    index = _index(root)
    classes = index["classes"]
    for entries in index["splits"].values():
        for e in entries:
            values = np.unique(_mask(root, e))
            assert values.max() < len(classes)
            assert [classes[v] for v in values if v] == e["classes"]
            assert e["classes"], "every image has at least one object"


def test_train_and_val_contain_only_seen_classes(bench):
    root, _ = bench
    index = _index(root)
    unseen_ids = {index["classes"].index(n) for n in index["unseen"]}
    for split in ("train", "val"):
        for e in index["splits"][split]:
            assert set(e["classes"]) <= set(index["seen"])
            assert not set(np.unique(_mask(root, e)).tolist()) & unseen_ids


def test_test_split_contains_unseen_classes_often(bench):
    root, _ = bench
    index = _index(root)
    unseen_ids = {index["classes"].index(n) for n in index["unseen"]}
    with_unseen = [e for e in index["splits"]["test"] if set(e["classes"]) & set(index["unseen"])]
    assert len(with_unseen) >= N / 2
    for e in with_unseen:
        assert set(np.unique(_mask(root, e)).tolist()) & unseen_ids


def test_generation_is_deterministic(bench, tmp_path):
    root, _ = bench
    again = tmp_path / "again"
    _generate(again)
    reference = _files(root)
    assert reference == _files(again)  # same seed -> byte-identical files
    parallel = tmp_path / "parallel"
    _generate(parallel, workers=2)
    assert reference == _files(parallel)  # per-image RNGs: worker count does not matter
    other = tmp_path / "other"
    _generate(other, seed=SEED + 1, n_val=0, n_test=0)
    assert _files(other)["train/images/train_000000.png"] != reference["train/images/train_000000.png"]


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ZerosegError, match="n_train"):
        synth.generate(tmp_path / "x", n_train=-1, progress=False)
    with pytest.raises(ZerosegError, match="size"):
        synth.generate(tmp_path / "x", size=8, progress=False)
    with pytest.raises(ZerosegError, match="workers"):
        synth.generate(tmp_path / "x", n_train=1, n_val=0, n_test=0, size=32, workers=0, progress=False)


# ----------------------------------------------------------------------------- reader


def test_synth_dataset_items(bench):
    root, _ = bench
    index = _index(root)
    ds = synth.SynthDataset(root, "test")
    assert len(ds) == N and ds.entries == index["splits"]["test"]
    assert ds.classes == index["classes"] and ds.seen == index["seen"] and ds.unseen == index["unseen"]
    image, label, classes = ds[0]
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert label.shape == (SIZE, SIZE) and label.dtype == np.int64
    assert classes == ds.classes
    assert [classes[v] for v in np.unique(label) if v] == ds.entries[0]["classes"]
    assert np.array_equal(ds[-1][1], ds[N - 1][1])
    with pytest.raises(IndexError):
        ds[N]
    assert len(list(ds)) == N


def test_synth_dataset_errors(tmp_path, bench):
    root, _ = bench
    with pytest.raises(ZerosegError, match="index.json") as err:
        synth.SynthDataset(tmp_path / "missing", "train")
    assert "\n" not in str(err.value) and "{train,val,test}" in str(err.value)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{not json")
    with pytest.raises(ZerosegError, match="not a zeroseg-synth/1 index"):
        synth.SynthDataset(tmp_path / "bad", "train")
    (tmp_path / "bad" / "index.json").write_text('{"format": "something-else/1", "splits": {}}')
    with pytest.raises(ZerosegError, match="not a zeroseg-synth/1 index"):
        synth.SynthDataset(tmp_path / "bad", "train")
    with pytest.raises(ZerosegError, match="unknown split"):
        synth.SynthDataset(root, "validation")
    small = tmp_path / "small"
    synth.generate(small, n_train=1, n_val=0, n_test=0, size=32, progress=False)
    ds = synth.SynthDataset(small, "train")
    (small / ds.entries[0]["mask"]).unlink()
    with pytest.raises(ZerosegError, match="mask not found"):
        ds[0]


def test_render_scene_rejects_unknown_classes():
    with pytest.raises(ValueError, match="dragon"):
        synth.render_scene(np.random.default_rng(0), ["dog face", "dragon"], 64)
