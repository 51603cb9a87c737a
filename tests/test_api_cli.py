"""``load_model``, ``Segmenter.segment`` and the ``zeroseg`` command, bad input included."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import official_layouts
from PIL import Image

from zeroseg import load_model
from zeroseg.cli import main


def test_segment_returns_label_map_and_probabilities(tiny_model_file):
    seg = load_model(tiny_model_file)
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    result = seg.segment(image, ["sky", "tree", "other"])
    assert result.label_map.shape == (50, 70)
    assert result.probs.shape == (3, 50, 70)
    assert np.allclose(result.probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(result.label_map, result.probs.argmax(0))
    assert abs(sum(result.fractions().values()) - 1) < 1e-9


def test_logits_pad_any_size_and_match_a_whole_multiple(tiny_model_file):
    seg = load_model(tiny_model_file)
    x = torch.randn(1, 3, 64, 64)
    full = seg.logits(x, ["a", "b"])
    assert full.shape == (1, 2, 64, 64)
    assert seg.logits(x[..., :50, :61], ["a", "b"]).shape == (1, 2, 50, 61)


def test_sliding_window_multiscale_and_flip(tiny_model_file):
    seg = load_model(tiny_model_file)
    image = np.random.default_rng(2).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    whole = seg.segment(image, ["a", "b"], short_side=0)
    windowed = seg.segment(image, ["a", "b"], short_side=0, window=64)
    assert windowed.probs.shape == whole.probs.shape
    assert not np.allclose(windowed.probs, whole.probs)  # windows see less context
    flipped = seg.segment(image[:, ::-1], ["a", "b"], short_side=0, flip=True)
    both = seg.segment(image, ["a", "b"], short_side=0, flip=True)
    assert np.allclose(flipped.probs[:, :, ::-1], both.probs, atol=1e-5)  # flip-averaging is symmetric
    ms = seg.segment(image, ["a", "b"], short_side=64, scales=(0.5, 1.0))
    assert ms.label_map.shape == (64, 128)


def test_cli_segment_writes_mask_overlay_and_json(tiny_model_file, sample_images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(sample_images), "--labels", "dog, grass,other", "--model", str(tiny_model_file),
               "--out", str(out)])
    assert rc == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for stem, (h, w) in {"noise": (48, 80), "ramp": (70, 50)}.items():
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P" and mask.size == (w, h)
        assert np.asarray(mask).max() < 3
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.size[1] >= h and overlay.size[0] > w  # legend beside the image
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["labels"] == ["dog", "grass", "other"]
        assert record["image_size"] == {"height": h, "width": w}
        assert abs(sum(record["pixel_fraction"].values()) - 1) < 1e-4
        assert record["model"] == str(tiny_model_file)
        # timings live in the run's manifest, so that the outputs themselves are reproducible bytes
        line = next(r for r in manifest if r["input"].endswith(stem + (".png" if stem == "noise" else ".jpg")))
        assert line["status"] == "ok" and line["seconds"] > 0 and line["outputs"]["json"] == str(out / f"{stem}.json")
        counts = np.bincount(np.asarray(mask).ravel(), minlength=3) / (h * w)
        assert np.allclose(counts, [record["pixel_fraction"][k] for k in record["labels"]], atol=1e-5)
    assert not list(out.glob(".*tmp"))  # no temporary files left behind
    assert "noise.png" in capsys.readouterr().out


@pytest.mark.parametrize("argv_tail, message", [
    (["--labels", ""], "empty label set"),
    (["--labels", "dog,cat,Dog"], "duplicate label"),
    (["--labels", "dog,,cat"], "empty label"),
    (["--labels", "dog", "--model", "no-such-model"], "unknown model"),
    (["--labels", "dog", "--model", "missing/dir/model.safetensors"], "model file not found"),
])
def test_cli_bad_arguments_exit_2_with_one_line(argv_tail, message, sample_images, tmp_path, capsys):
    rc = main(["segment", str(sample_images / "noise.png"), "--out", str(tmp_path)] + argv_tail)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("zeroseg: error: ") and message in err and err.count("\n") == 1


def test_cli_bad_files_exit_2(tiny_model_file, sample_images, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(tiny_model_file.read_bytes()[:5000])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        ([str(tmp_path / "missing.png")], "image not found"),
        ([str(corrupt)], "corrupt image"),
        ([str(text)], "not an image"),
        ([str(sample_images / "noise.png"), "--model", str(truncated)], "truncated"),
        ([str(sample_images / "noise.png"), "--out", str(blocker / "sub")], "cannot write to output directory"),
    ]
    for tail, message in cases:
        args = ["segment"] + tail + ["--labels", "a,b", "--model", str(tiny_model_file)]
        if "--model" in tail:
            args = ["segment"] + tail + ["--labels", "a,b"]
        if "--out" not in tail:
            args += ["--out", str(tmp_path / "o")]
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 2, (tail, err)
        assert message in err and err.count("\n") == 1, (tail, err)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from zeroseg.io import write_bytes_atomic

    target = tmp_path / "result.json"
    write_bytes_atomic(target, b"old")

    class Boom(Exception):
        pass

    def exploding_write(self, data):
        open(self, "wb").write(data[:3])  # half written, then the process "dies"
        raise Boom

    monkeypatch.setattr("pathlib.Path.write_bytes", exploding_write)
    with pytest.raises(Boom):
        write_bytes_atomic(target, b"new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_convert_official_checkpoint_round_trip(tmp_path, capsys):
    layout = official_layouts()["clip_vitb32_384/arch_option=2"]
    g = torch.Generator().manual_seed(0)
    # one constant per tensor, broadcast (cheap to write); positive so BatchNorm variances are valid
    sd = {k: (torch.rand((), generator=g) * 0.1 + 0.01).to(getattr(torch, dt)).expand(shape)
          for k, (shape, dt) in layout["keys"].items()}
    ckpt = tmp_path / "lseg.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    out = tmp_path / "lseg.safetensors"
    assert main(["convert", str(ckpt), str(out), "--arch-option", "2", "--block-depth", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    official = load_model(ckpt, arch_option=2, block_depth=2)
    converted = load_model(out)
    assert converted.config.arch_option == 2 and converted.config.block_depth == 2
    x = torch.randn(1, 3, 64, 96)
    labels = ["a photo of a dog", "grass", "other"]
    assert torch.equal(official.logits(x, labels), converted.logits(x, labels))
    assert main(["convert", str(tmp_path / "none.ckpt"), str(out)]) == 2


def test_console_script_runs_and_reports_version():
    out = subprocess.run([sys.executable, "-m", "zeroseg.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("zeroseg ")


def test_train_subcommand_takes_its_own_options(capsys, tmp_path):
    assert main(["train", "--print-config", "data=somewhere", "epochs=3", "--edge-loss-weight", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "data: somewhere" in out and "epochs: 3" in out and "edge_loss_weight: 0.3" in out
    assert main(["train", f"data={tmp_path / 'none'}", f"out={tmp_path / 'o'}"]) == 2
    assert "data directory not found" in capsys.readouterr().err


def test_fold_model_loader_fills_the_fold_and_keeps_one_model(tiny_model_file, tmp_path):
    """`zeroseg eval --dataset ... --model ckpt/fold{fold}.safetensors`, as library API."""
    import shutil

    from zeroseg.api import fold_model_loader

    for fold in (0, 1):
        shutil.copy(tiny_model_file, tmp_path / f"fold{fold}.safetensors")
    load = fold_model_loader(tmp_path / "fold{fold}.safetensors")
    first = load(0)
    assert first.source == str(tmp_path / "fold0.safetensors") and load(0) is first
    assert load(1).source == str(tmp_path / "fold1.safetensors")
    assert load(0) is not first  # one model in memory at a time: fold 0 was dropped for fold 1
    assert fold_model_loader(tiny_model_file)(None).source == str(tiny_model_file)
