"""Batch inference: folders, workers, batches, --resume, manifest.jsonl, exit codes, torchrun shards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg.batch import MANIFEST, find_images, outputs_valid, plan_jobs
from zeroseg.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
LABELS = "tiger face,bus,violin,pear,castle,duck,other"


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def tree_bytes(root: Path, skip=(MANIFEST,)) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """examples/images in a nested tree, plus crops of other sizes, a hidden folder and a non-image."""
    root = tmp_path_factory.mktemp("tree")
    (root / "a" / "deep").mkdir(parents=True)
    (root / ".cache").mkdir()
    examples = sorted(EXAMPLES.glob("*.png"))
    for k, src in enumerate(examples):
        shutil.copy(src, root / ("a" if k % 2 else "") / src.name)
        Image.open(src).convert("RGB").crop((0, 0, 200, 150)).save(root / "a" / "deep" / f"crop{k}.jpg")
    shutil.copy(examples[0], root / ".cache" / "hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_walk_is_recursive_sorted_skips_hidden_and_the_output_folder(image_tree, tmp_path):
    found = [p.relative_to(image_tree).as_posix() for p, _ in find_images([image_tree])]
    n = len(list(EXAMPLES.glob("*.png")))
    assert len(found) == 2 * n and found == sorted(found)
    assert not any(".cache" in f or f.endswith(".txt") for f in found)
    jpgs = find_images([image_tree], pattern="**/*.jpg")
    assert len(jpgs) == n and all(folder == "a/deep" for _, folder in jpgs)
    assert len(find_images([image_tree], pattern="*.png")) == (n + 1) // 2  # top level only
    # an output folder inside the input folder is never read back as input
    inside = image_tree / "out_inside"
    (inside / "x").mkdir(parents=True)
    shutil.copy(sorted(EXAMPLES.glob("*.png"))[0], inside / "x" / "old_overlay.png")
    try:
        stems = [j.stem for j in plan_jobs([image_tree], inside)]
        assert len(stems) == 2 * n and not any("old_overlay" in s for s in stems)
        assert len({s.lower() for s in stems}) == len(stems)
    finally:
        shutil.rmtree(inside)


def test_folder_run_mirrors_layout_and_writes_a_manifest(image_tree, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(image_tree), "--labels", LABELS, "--out", str(out), "--workers", "2",
               "--batch-size", "3"])
    assert rc == 0, capsys.readouterr().err
    lines = manifest(out)
    inputs = [str(p) for p, _ in find_images([image_tree])]
    assert [r["input"] for r in lines] == inputs and [r["index"] for r in lines] == list(range(len(inputs)))
    for r in lines:
        assert r["status"] == "ok" and r["labels"] == LABELS.split(",") and r["seconds"] > 0
        rel = Path(r["input"]).relative_to(image_tree)
        assert Path(r["outputs"]["mask"]) == out / rel.parent / f"{rel.stem}.png"
        assert Image.open(r["outputs"]["mask"]).size == Image.open(r["input"]).size
        assert outputs_valid(Path(r["outputs"]["json"]), {"image": r["input"]})


def test_workers_and_batches_give_the_sequential_results(image_tree, tmp_path, capsys):
    """Decoding threads never change a byte; a batch of equal-size crops gives the same label maps."""
    runs = {}
    for name, extra in {"plain": [], "workers": ["--workers", "2"], "batched": ["--batch-size", "4"]}.items():
        out = tmp_path / name
        assert main(["segment", str(image_tree), "--labels", LABELS, "--out", str(out)] + extra) == 0
        runs[name] = out
    assert tree_bytes(runs["workers"]) == tree_bytes(runs["plain"])
    for mask in runs["plain"].rglob("*.png"):
        if mask.stem.endswith("_overlay"):
            continue
        a = np.asarray(Image.open(mask))
        b = np.asarray(Image.open(runs["batched"] / mask.relative_to(runs["plain"])))
        assert (a == b).mean() > 0.999, mask


def test_a_bad_image_is_reported_and_the_run_goes_on(image_tree, tmp_path, capsys):
    d = tmp_path / "in"
    shutil.copytree(image_tree / "a", d)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (d / "strip.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (4000, 1)).save(d / "strip.png")
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["segment", str(d), "--labels", LABELS, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1  # some failed, the rest written
    lines = {Path(r["input"]).name: r for r in manifest(out)}
    assert lines["broken.png"]["status"] == "error" and "corrupt image" in lines["broken.png"]["error"]
    assert lines["strip.png"]["status"] == "error" and "megapixels" in lines["strip.png"]["error"]
    assert "strip.png" in lines["strip.png"]["error"]  # every error names its file
    assert sum(r["status"] == "ok" for r in lines.values()) == len(lines) - 2
    errors = [line for line in err.splitlines() if line.startswith("zeroseg: error: ")]
    assert len(errors) == 2 and "Traceback" not in err
    assert f"2 of {len(lines)} images failed" in err
    # all of them bad: nothing could be done
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(d / "broken.png", bad / "x.png")
    shutil.copy(d / "broken.png", bad / "y.png")
    assert main(["segment", str(bad), "--labels", LABELS, "--out", str(tmp_path / "o2")]) == 2


def test_resume_skips_only_complete_outputs_of_the_same_run(image_tree, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["segment", str(image_tree / "a"), "--labels", LABELS, "--out", str(out)]
    assert main(args) == 0
    first = tree_bytes(out)
    lines = manifest(out)
    assert len(lines) >= 3
    # damage: one image set lost its overlay, one has another run's label map, one half-written JSON
    Path(lines[0]["outputs"]["overlay"]).unlink()
    other = np.asarray(Image.open(lines[1]["outputs"]["mask"])).copy()
    other[:5] = 0
    Image.fromarray(other, mode="L").convert("P").save(lines[1]["outputs"]["mask"])
    json_path = Path(lines[2]["outputs"]["json"])
    json_path.write_text(json_path.read_text()[:40])
    assert main(args + ["--resume"]) == 0
    status = [r["status"] for r in manifest(out)]
    assert status[:3] == ["ok", "ok", "ok"] and set(status[3:]) == {"skipped"}
    assert tree_bytes(out) == first  # redone images come back byte for byte
    # other options or labels: the outputs are for another run, nothing is skipped
    assert main(args + ["--resume", "--flip"]) == 0
    assert {r["status"] for r in manifest(out)} == {"ok"}
    assert main(args[:2] + ["--labels", "pear,other", "--out", str(out), "--resume"]) == 0
    assert {r["status"] for r in manifest(out)} == {"ok"}


def test_instances_folder_run_resume_and_run_level_coco(image_tree, tmp_path, capsys):
    out = tmp_path / "inst"
    args = ["instances", str(image_tree / "a"), "--labels", "tiger face,bus,violin,pear,castle,duck",
            "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    coco = json.loads((out / "detections.json").read_text())
    lines = manifest(out)
    assert [im["id"] for im in coco["images"]] == [r["index"] + 1 for r in lines]
    per_image = sum(len(json.loads(Path(r["outputs"]["json"]).read_text())["detections"]) for r in lines)
    assert len(coco["annotations"]) == per_image > 0
    before = (out / "detections.json").read_bytes()
    assert main(args + ["--resume"]) == 0
    assert {r["status"] for r in manifest(out)} == {"skipped"}
    assert (out / "detections.json").read_bytes() == before  # built from the images' records


def _torchrun(module: str, args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("module", ["zeroseg.segment", "zeroseg.instances"])
def test_torchrun_shards_union_equals_one_process_run(module, image_tree, tmp_path):
    labels = LABELS if module.endswith("segment") else "tiger face,bus,violin,pear,castle,duck"
    base = [str(image_tree), "--labels", labels]
    one = subprocess.run([sys.executable, "-m", module, *base, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    two = _torchrun(module, base + ["--out", str(tmp_path / "two")], 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert tree_bytes(tmp_path / "two") == tree_bytes(tmp_path / "one")  # detections.json included
    merged, single = manifest(tmp_path / "two"), manifest(tmp_path / "one")
    def strip(rows, root):
        return [{**{k: v for k, v in r.items() if k != "seconds"},
                 "outputs": {k: Path(v).relative_to(root).as_posix() for k, v in r["outputs"].items()}} for r in rows]

    assert strip(merged, tmp_path / "two") == strip(single, tmp_path / "one")
    assert not list((tmp_path / "two").glob(".manifest*"))  # the rank parts are merged away
