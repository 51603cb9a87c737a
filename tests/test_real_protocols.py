"""The papers' protocols on real datasets: episode sampling, metric values on a fake dataset whose
answers are known, the published numbers' data file and README table, and `zeroseg eval --dataset`."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroseg.cli import main
from zeroseg.errors import ZerosegError
from zeroseg.eval import real
from zeroseg.eval.real import (
    evaluate_episodes,
    evaluate_fixed,
    load_published,
    published_for,
    published_table_markdown,
    sample_episodes,
)

README = Path(__file__).resolve().parents[1] / "README.md"
IGN = 255


# -- fakes ------------------------------------------------------------------------------------
class FakeDataset:
    """The shape of zeroseg.data.datasets' loaders: classes, test_classes, ds[i], episodes()."""

    def __init__(self, labels, classes, test_classes, pairs, name="pascal5i", fold=0, split="val"):
        self.labels = [np.asarray(x, dtype=np.int64) for x in labels]
        self.classes, self.test_classes, self.pairs = list(classes), list(test_classes), list(pairs)
        self.name, self.fold, self.split = name, fold, split
        self.layout = "FAKE/<layout>"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        label = self.labels[i]
        # the image encodes the label map (value in every channel) so fake models can read it
        image = np.repeat(np.where(label == IGN, 254, label).astype(np.uint8)[..., None], 3, axis=2)
        return image, label.copy(), list(self.classes)

    def episodes(self):
        return list(self.pairs)


class _Answer:
    def __init__(self, label_map):
        self.label_map = label_map


class FakeSegmenter:
    """Answers with ``rule(image, labels)`` and records every call's labels and options."""

    def __init__(self, rule, source="fake.ckpt"):
        self.rule, self.source, self.calls = rule, source, []

    def segment(self, image, labels, **options):
        self.calls.append((list(labels), options, image.shape))
        return _Answer(self.rule(image, labels))


# Episodic fixture, 4x4 label maps: classes others/cat/dog/car; fold classes cat (1) and dog (2).
CLASSES = ["others", "cat", "dog", "car"]
A = [[1, 1, 0, 0],
     [1, 1, 0, 0],
     [0, 0, 2, 2],
     [0, 0, IGN, IGN]]     # cat 4, dog 2, ignored 2, background 8
B = [[2, 2, 0, 0],
     [2, 2, 0, 0],
     [0, 0, 0, 3],
     [0, 0, 0, 3]]         # dog 4, car 2, background 10
PAIRS = [(0, 1), (0, 2), (1, 2)]


def episodic(test_classes=(1, 2)):
    return FakeDataset([A, B], CLASSES, test_classes, PAIRS)


def perfect(image, labels):
    """Reads the class id off the image: knows which class the episode names."""
    cls = CLASSES.index(labels[1])
    return (image[..., 0] == cls).astype(np.int64)


def top_left(image, labels):
    out = np.zeros(image.shape[:2], np.int64)
    out[:2, :2] = 1
    return out


# -- sampling ---------------------------------------------------------------------------------
def test_permuted_rule_is_deterministic_and_cycles_a_permutation():
    pairs = [(i, 1 + i % 3) for i in range(10)]
    a = sample_episodes(pairs, n=25, seed=0, rule="permuted")
    assert a == sample_episodes(pairs, n=25, seed=0, rule="permuted")
    assert a != sample_episodes(pairs, n=25, seed=1, rule="permuted")
    assert len(a) == 25
    assert sorted(a[:10]) == sorted(pairs)            # one full pass, each pair once
    assert a[10:20] == a[:10] and a[20:] == a[:5]     # then the same permutation again
    assert set(Counter(a).values()) == {2, 3}         # 25 = 2 x 10 + 5
    few = sample_episodes(pairs, n=4, seed=0, rule="permuted")
    assert len(set(few)) == 4 and set(few) <= set(pairs)


def test_in_order_rule_is_hsnet_pascal_idx_mod_len():
    pairs = [(0, 1), (1, 1), (2, 2)]
    assert sample_episodes(pairs, n=7, seed=123, rule="in-order") == [
        (0, 1), (1, 1), (2, 2), (0, 1), (1, 1), (2, 2), (0, 1)]
    counts = Counter(sample_episodes([(i, 1) for i in range(346)], n=1000, rule="in-order"))
    assert sum(counts.values()) == 1000 and counts[(0, 1)] == 3 and counts[(345, 1)] == 2


def test_class_uniform_rule_replays_hsnet_coco_draws():
    # HSNet's COCO-20i test loader, with np.random seeded to 0 and no support images:
    #   class = choice(class_ids, 1, replace=False)[0]; image = choice(images_of[class], 1, replace=False)[0]
    images_of = {4: [10, 11, 12], 8: [20, 21], 12: [30, 31, 32, 33, 34], 16: [40]}
    pairs = [(i, c) for c in sorted(images_of) for i in images_of[c]]
    rs = np.random.RandomState(0)
    expected = []
    for _ in range(40):
        c = int(rs.choice(sorted(images_of), 1, replace=False)[0])
        expected.append((int(rs.choice(images_of[c], 1, replace=False)[0]), c))
    assert sample_episodes(pairs, n=40, seed=0, rule="class-uniform") == expected
    assert sample_episodes(pairs, n=40, seed=1, rule="class-uniform") != expected


def test_all_rule_uses_every_pair_once_and_errors_are_clear():
    pairs = [(3, 5), (1, 5), (2, 6)]
    assert sample_episodes(pairs, n=1000, rule="all") == pairs
    with pytest.raises(ZerosegError, match="no candidate episodes"):
        sample_episodes([], n=10)
    with pytest.raises(ZerosegError, match="unknown episode rule"):
        sample_episodes(pairs, rule="shuffle")
    with pytest.raises(ZerosegError, match="at least 1"):
        sample_episodes(pairs, n=0)


# -- episode metrics --------------------------------------------------------------------------
def test_perfect_predictor_scores_one_and_model_sees_official_labels():
    seg = FakeSegmenter(perfect)
    r = evaluate_episodes(seg, episodic(), short_side=4, rule="all", progress=False)
    assert r["metrics"] == {"miou": 100.0, "fbiou": 100.0}
    assert r["num_episodes"] == 3 and r["episodes_per_class"] == {"cat": 1, "dog": 2}
    # LSeg's zero-shot labels ["others", class]; the square-resized image runs at its own size
    assert [c[0] for c in seg.calls] == [["others", "cat"], ["others", "dog"], ["others", "dog"]]
    assert all(c[1] == {"short_side": 0} and c[2] == (4, 4, 3) for c in seg.calls)


def test_all_background_predictor_matches_hand_computed_values():
    seg = FakeSegmenter(lambda image, labels: np.zeros(image.shape[:2], np.int64))
    r = evaluate_episodes(seg, episodic(), short_side=4, rule="all", progress=False)
    # foreground: no intersection anywhere -> class IoUs 0, mIoU 0
    # background: (A,cat) 10/14, (A,dog) 12/14, (B,dog) 12/16 (ignored pixels left out) -> 34/44
    assert r["metrics"]["miou"] == 0.0
    assert r["metrics"]["fbiou"] == pytest.approx(100 * (34 / 44 + 0) / 2, abs=1e-4)


def test_partial_predictor_and_hsnet_class_accumulation():
    seg = FakeSegmenter(top_left)   # always answers the top-left 2x2 block
    r = evaluate_episodes(seg, episodic(), short_side=4, rule="all", progress=False)
    # cat: (A) 4/4; dog: (A) 0/6 + (B) 4/4 summed -> 4/10 (not the mean of per-episode IoUs)
    assert r["per_class_iou"] == {"cat": 100.0, "dog": 40.0}
    assert r["metrics"]["miou"] == pytest.approx(70.0)
    # FB-IoU: fg 8/14, bg (10 + 8 + 12) / (10 + 14 + 12)
    assert r["metrics"]["fbiou"] == pytest.approx(100 * (8 / 14 + 30 / 36) / 2, abs=1e-4)
    # HSNet counts a fold class without any episode as IoU 0 in the mean
    r3 = evaluate_episodes(FakeSegmenter(top_left), episodic((1, 2, 3)), short_side=4, rule="all", progress=False)
    assert r3["metrics"]["miou"] == pytest.approx((100 + 40 + 0) / 3, abs=1e-4)
    assert r3["episodes_per_class"]["car"] == 0


def test_square_resize_mirrors_hsnet_and_short_side_mode_scores_full_size():
    label = np.array([[1, 1, 0, 2, 2],
                      [1, 1, 0, 2, 2],
                      [0, 0, 0, IGN, 0]])
    image = np.zeros((3, 5, 3), np.uint8)
    img, lab = real._square(image, label, 4)
    # torch 'nearest' to 4x4: rows floor(k * 3/4) = 0,0,1,2; columns floor(k * 5/4) = 0,1,2,3
    assert lab.tolist() == [[1, 1, 0, 2], [1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, IGN]]
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    ds = FakeDataset([label], CLASSES, [1, 2], [(0, 1), (0, 2)])
    seg = FakeSegmenter(perfect)
    r = evaluate_episodes(seg, ds, short_side=480, rule="all", resize="short-side", progress=False)
    assert r["metrics"] == {"miou": 100.0, "fbiou": 100.0}
    assert seg.calls[0][1] == {"short_side": 480} and seg.calls[0][2] == (3, 5, 3)


def test_episode_result_is_json_and_carries_published_numbers():
    r = evaluate_episodes(FakeSegmenter(perfect), episodic(), short_side=4, rule="all", progress=False)
    json.dumps(r, allow_nan=False)
    expected = [e for e in load_published()["results"] if e["dataset"] == "pascal5i" and e["fold"] == 0]
    assert [(e["method"], e["value"]) for e in r["published"]] == [(e["method"], e["value"]) for e in expected]
    assert r["settings"]["rule"] == "all" and r["headline"] == {"name": "miou", "value": 100.0}


# -- fixed label set ----------------------------------------------------------------------------
def test_fixed_protocol_perfect_and_constant_predictors():
    classes = ["other", "wall", "floor", "sky"]
    labels = [[[1, 1, 2, 2, 3, 3, IGN, 0],
               [1, 1, 2, 2, 3, 3, IGN, 0],
               [1, 1, 1, 1, 2, 2, 2, 2],
               [3, 3, 3, 3, 3, 3, 3, 3]]]
    ds = FakeDataset(labels, classes, [1, 2, 3], [], name="ade20k", fold=None)
    seg = FakeSegmenter(lambda image, names: np.clip(image[..., 0].astype(np.int64) - 1, 0, 2))
    r = evaluate_fixed(seg, ds, progress=False)
    assert r["metrics"] == {"miou": 100.0, "pixacc": 100.0}
    names, options, _ = seg.calls[0]
    assert names == ["wall", "floor", "sky"]
    # long side 520: a 4x8 image gets short side 260; LSeg's scales, flip and 480-pixel windows
    assert options == {"short_side": 260, "window": 480, "scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), "flip": True}
    # always "wall": 28 scored pixels (2 ignored, 2 'other'); wall 8 -> IoU 8/28, floor 0, sky 0
    r0 = evaluate_fixed(FakeSegmenter(lambda image, names: np.zeros(image.shape[:2], np.int64)), ds, progress=False)
    assert r0["per_class_iou"] == {"wall": pytest.approx(100 * 8 / 28, abs=1e-4), "floor": 0.0, "sky": 0.0}
    assert r0["metrics"]["miou"] == pytest.approx(100 * 8 / 28 / 3, abs=1e-4)
    assert r0["metrics"]["pixacc"] == pytest.approx(100 * 8 / 28, abs=1e-4)


# -- published numbers --------------------------------------------------------------------------
def test_published_json_every_number_has_a_source():
    data = load_published()
    assert data["format"] == "zeroseg-published/1" and data["units"] == "percent"
    for key, source in data["sources"].items():
        assert source["title"] and source["url"].startswith("https://") and source["where"], key
    seen = set()
    for e in data["results"]:
        assert e["source"] in data["sources"], e
        assert e["metric"] and e["method"] and e["dataset"], e
        assert e.get("fold") in (None, "mean", 0, 1, 2, 3), e
        if e["value"] is None:
            assert "not verified" in e["note"], e          # a gap says so, never a guess
        else:
            assert isinstance(e["value"], (int, float)) and 0 <= e["value"] <= 100, e
        key = (e["method"], e["backbone"], e["dataset"], e.get("fold"), e.get("setting"), e["metric"])
        assert key not in seen, f"duplicate entry {key}"
        seen.add(key)
    methods = {e["method"] for e in data["results"]}
    assert methods == {"LSeg", "SAZS", "ZSI"}


def test_published_for_filters_and_names_the_source():
    data = {"sources": {"s": {"title": "Paper", "url": "https://x", "where": "Table 1"}},
            "results": [{"method": "M", "backbone": "B", "dataset": "pascal5i", "fold": 0, "metric": "miou",
                         "value": 50.0, "source": "s"},
                        {"method": "M", "backbone": "B", "dataset": "pascal5i", "fold": 1, "metric": "miou",
                         "value": 40.0, "source": "s"},
                        {"method": "M", "backbone": "B", "dataset": "coco20i", "fold": 0, "metric": "miou",
                         "value": 30.0, "source": "s"}]}
    got = published_for("pascal5i", 0, data)
    assert len(got) == 1 and got[0]["value"] == 50.0
    assert got[0]["source_title"] == "Paper" and got[0]["source_url"] == "https://x"
    assert published_for("fss1000", None, data) == []


def test_published_table_markdown_known_output():
    data = {"sources": {"s": {"title": "T", "url": "https://u", "where": "w"}},
            "results": [{"method": "M", "backbone": "B", "dataset": "pascal5i", "fold": 0, "metric": "miou",
                         "value": 50.0, "source": "s"},
                        {"method": "M", "backbone": "B", "dataset": "pascal5i", "fold": 2, "metric": "miou",
                         "value": 40.25, "source": "s"},
                        {"method": "M", "backbone": "B", "dataset": "pascal5i", "fold": "mean", "metric": "fbiou",
                         "value": None, "source": "s", "note": "not verified"}]}
    assert published_table_markdown(data) == (
        "| method | backbone | dataset | metric | fold 0 | fold 1 | fold 2 | fold 3 | mean / whole set | source |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        "| M | B | PASCAL-5i | mIoU | 50.0 | - | 40.2 | - | - | [s](https://u) |\n"
        "\n"
        "Not verified, so null in `published.json` (shown as n/a beside measurements):\n"
        "- M B, PASCAL-5i: FB-IoU mean\n")


def test_readme_table_equals_script_output():
    import runpy

    text = README.read_text(encoding="utf-8")
    start, end = "<!-- published-table:start -->\n", "<!-- published-table:end -->"
    assert start in text and end in text
    section = text.split(start, 1)[1].split(end, 1)[0]
    assert section == published_table_markdown()
    script = runpy.run_path(str(README.parent / "benchmarks" / "published_table.py"))
    assert script["render"]() == section


# -- command line -----------------------------------------------------------------------------
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zeroseg: error: "), err
    return err[0]


def test_cli_missing_dataset_folder_names_the_layout(tmp_path, capsys):
    from zeroseg.data.datasets import DATASETS

    missing = tmp_path / "no_such_folder"
    assert main(["eval", "--dataset", "pascal5i", "--fold", "0", "--data-root", str(missing)]) == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "not found" in line and DATASETS["pascal5i"].layout in line


def test_cli_needs_exactly_one_of_data_and_dataset(tmp_path, capsys):
    assert main(["eval"]) == 2
    assert "exactly one of --data" in _one_error_line(capsys)
    assert main(["eval", "--data", str(tmp_path), "--dataset", "fss1000", "--data-root", str(tmp_path)]) == 2
    assert "exactly one of --data" in _one_error_line(capsys)
    assert main(["eval", "--dataset", "fss1000"]) == 2
    assert "--data-root" in _one_error_line(capsys)
    assert main(["eval", "--dataset", "pascal5i", "--data-root", str(tmp_path)]) == 2
    assert "--fold" in _one_error_line(capsys)
    assert main(["eval", "--dataset", "ade20k", "--fold", "1", "--data-root", str(tmp_path)]) == 2
    assert "no folds" in _one_error_line(capsys)


def test_cli_all_folds_one_model_per_fold_and_metrics_json(tmp_path, capsys, monkeypatch):
    import zeroseg.api

    loaded, opened = [], []

    def fake_open(name, root, fold=None, split="test", convention=None):
        opened.append((name, fold, split, convention))
        return FakeDataset([A, B], CLASSES, [1, 2], PAIRS, name=name, fold=fold)

    def fake_load(source, *args, **kwargs):
        loaded.append(source)
        # fold 0's model is perfect, the others answer the top-left block
        return FakeSegmenter(perfect if source == "m0.ckpt" else top_left, source=source)

    monkeypatch.setattr(real, "open_real_dataset", fake_open)
    monkeypatch.setattr(zeroseg.api, "load_model", fake_load)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", "pascal5i", "--fold", "all", "--data-root", str(tmp_path), "--model",
               "m{fold}.ckpt", "--episodes", "5", "--short-side", "4", "--out", str(out)])
    assert rc == 0
    assert loaded == ["m0.ckpt", "m1.ckpt", "m2.ckpt", "m3.ckpt"]
    assert opened == [("pascal5i", f, "test", None) for f in range(4)]
    result = json.loads((out / "metrics.json").read_text())
    assert [r["fold"] for r in result["folds"]] == [0, 1, 2, 3]
    assert all(r["num_episodes"] == 5 and r["settings"]["rule"] == "in-order" for r in result["folds"])
    # 5 in-order episodes over 3 pairs: (A,cat) (A,dog) (B,dog) (A,cat) (A,dog); top-left block:
    # cat 8/8; dog (0+4+0)/(6+4+6) -> mIoU (1 + 0.25)/2; the mean over folds mixes fold 0's 100
    assert result["folds"][1]["metrics"]["miou"] == pytest.approx(62.5)
    assert result["metrics"]["miou"] == pytest.approx((100 + 3 * 62.5) / 4)
    printed = capsys.readouterr().out
    assert "mean over 4 folds" in printed and "metrics in" in printed
    lseg0 = [e for e in load_published()["results"]
             if e["dataset"] == "pascal5i" and e["fold"] == 0 and e["method"] == "LSeg"][0]
    assert f"LSeg {lseg0['backbone']}: {lseg0['value']:.1f}" in printed


def test_cli_synthetic_benchmark_path_unchanged(tmp_path, monkeypatch):
    import zeroseg.api
    import zeroseg.eval.protocols as protocols

    calls = []
    monkeypatch.setattr(zeroseg.api, "load_model", lambda source, *a, **k: FakeSegmenter(perfect, source=source))
    monkeypatch.setattr(protocols, "evaluate", lambda seg, data, protocol, **kw: calls.append((data, protocol, kw))
                        or {"protocol": protocol, "split": kw["split"], "num_images": 0, "metrics": {}})
    assert main(["eval", "--data", str(tmp_path), "--protocol", "episode"]) == 0
    data, protocol, kw = calls[0]
    assert (data, protocol, kw["split"], kw["seed"], kw["short_side"]) == (str(tmp_path), "episode", "test", 0, None)


def test_cli_runs_an_official_checkpoint_on_a_pascal5i_folder(tmp_path, capsys):
    """End to end: an official zero-shot checkpoint (exact key layout) on a PASCAL-5i folder in HSNet's
    layout; the numbers are meaningless (constant weights) but every step of the real path runs."""
    from conftest import official_layouts
    from dataset_fixtures import build_pascal
    from test_official_checkpoints import layout_checkpoint

    build_pascal(tmp_path / "Datasets_HSN", with_lists=True)
    ckpt = tmp_path / "pascal_fold0.ckpt"
    torch.save(layout_checkpoint(official_layouts()["zs/clip_resnet101/arch_option=0"]), ckpt)
    out = tmp_path / "eval"
    rc = main(["eval", "--dataset", "pascal5i", "--fold", "0", "--data-root", str(tmp_path / "Datasets_HSN"),
               "--model", str(ckpt), "--episodes", "2", "--short-side", "64", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["num_episodes"] == 2 and result["fold"] == 0
    assert 0.0 <= result["metrics"]["miou"] <= 100.0 and 0.0 <= result["metrics"]["fbiou"] <= 100.0
    assert "52.8" in capsys.readouterr().out  # LSeg's published fold-0 number printed beside ours
