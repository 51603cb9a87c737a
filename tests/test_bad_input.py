"""The bad-input battery: every subcommand, every way to hand zeroseg something wrong.

Promise (README, "Bad input"): one line ``zeroseg: error: ...`` on stderr, exit code 2, no
traceback, no temporary file left, nothing overwritten. Usage errors that argparse reports (usage
block + "error:" line, exit 2) are accepted as they are. The odd-but-valid inputs must work and
write well-formed outputs. Memory-bound cases run in a subprocess and assert a bound on its peak RSS.
"""
from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroseg.cli import main

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height with one tiny IDAT: decoding it would be a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def jpeg_with_size(path: Path, width: int, height: int) -> Path:
    """A small real JPEG whose SOF0 marker is patched to claim width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


class Payload:
    """Unpickling this would create a marker file: a model file must never be able to do that."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_file):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    good = d / "good.png"
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(good)
    f = {"good": good, "dir": d}
    f["corrupt_png"] = d / "corrupt.png"
    f["corrupt_png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    f["text"] = d / "notes.txt"
    f["text"].write_text("hello")
    f["empty_png"] = d / "empty.png"
    f["empty_png"].write_bytes(b"")
    f["half_png"] = d / "half.png"
    f["half_png"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    f["half_jpg"] = d / "half.jpg"
    f["half_jpg"].write_bytes(buf.getvalue()[:300])
    f["no_images_dir"] = d / "empty_dir"
    f["no_images_dir"].mkdir()
    f["long_strip"] = d / "strip.png"
    Image.new("RGB", (4000, 1), (10, 200, 30)).save(f["long_strip"])
    f["big_png"] = png_header_only(d / "bomb.png", 20000, 20000)
    f["big_jpg"] = jpeg_with_size(d / "bomb.jpg", 20000, 20000)
    f["over_png"] = png_header_only(d / "over.png", 8000, 6000)  # 48 MP: over zeroseg's limit, under Pillow's
    f["over_jpg"] = jpeg_with_size(d / "over.jpg", 8000, 6000)
    f["large"] = d / "large.png"
    Image.new("RGB", (2000, 2000), (120, 30, 60)).save(f["large"])
    f["blocker"] = d / "a_file"
    f["blocker"].write_text("x")
    # models
    f["trunc_model"] = d / "trunc.safetensors"
    f["trunc_model"].write_bytes(tiny_model_file.read_bytes()[:5000])
    f["random_model"] = d / "random.safetensors"
    f["random_model"].write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    f["fake_zip"] = d / "fake.ckpt"
    f["fake_zip"].write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    Payload.marker = str(d / "PWNED")
    f["pickle"] = d / "evil.ckpt"
    torch.save({"state_dict": Payload()}, f["pickle"])
    f["pwned"] = d / "PWNED"
    from safetensors.torch import load_file, save_file

    from zeroseg.models.loading import read_safetensors_metadata

    meta = read_safetensors_metadata(tiny_model_file)
    tensors = load_file(str(tiny_model_file))
    for name, change in (("unknown_backbone", {"backbone": "no_such_net_v9"}), ("wrong_type", {"features": "big"}),
                         ("wrong_list", {"mean": "grey"})):
        cfg = {**json.loads(meta["config"]), **change}
        f[name] = d / f"{name}.safetensors"
        save_file(tensors, str(f[name]), metadata={**meta, "config": json.dumps(cfg)})
    f["garbage_yaml"] = d / "garbage.yaml"
    f["garbage_yaml"].write_bytes(bytes(range(256)) * 4)
    f["list_yaml"] = d / "list.yaml"
    f["list_yaml"].write_text("- a\n- b\n")
    return f


@pytest.fixture(scope="module")
def instance_model(tmp_path_factory):
    from zeroseg.models.zsi import create_zsi_model, save_zsi_model

    torch.manual_seed(0)
    tiny = {"backbone": "resnet10t", "fpn_channels": 16, "representation_size": 32, "mask_layers": [16, 16],
            "embed_dim": 384, "min_size": 64, "max_size": 128, "train_min_sizes": None,
            "anchor_sizes": [8, 16, 32, 64, 128], "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20],
            "box_batch_size_per_image": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    path = tmp_path_factory.mktemp("zsi") / "tiny_instances.safetensors"
    save_zsi_model(path, create_zsi_model("zsi_resnet10t_fpn64", **tiny).eval())
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def with_defaults(command: str, tail: list, defaults: dict) -> list[str]:
    """``command`` + the case's arguments + each default option the case does not set itself."""
    tail = [str(a) for a in tail]
    argv = [command] + tail
    for option, value in defaults.items():
        if option not in tail:
            argv += [option, str(value)]
    return argv


def assert_one_line_error(rc: int, err: str, message: str, usage: bool = False) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    if usage:  # argparse: usage block, then "prog: error: ..."
        assert err.strip().splitlines()[-1].split("error: ", 1)[-1] and "error:" in err and message in err, err
    else:
        assert err.startswith("zeroseg: error: ") and err.count("\n") == 1 and message in err, err


def no_temp_files(*dirs: Path) -> None:
    for d in dirs:
        if Path(d).is_dir():
            left = [p.name for p in Path(d).rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".zeroseg-")]
            assert not left, left


# ----------------------------------------------------------------------------- bad inputs
LABELS_257 = ",".join(f"label{i}" for i in range(257))

# (case id, argv builder, expected message part, is an argparse usage error)
SEGMENT_CASES = [
    ("missing image", lambda f, m: [f["dir"] / "missing.png"], "image not found", False),
    ("corrupt png", lambda f, m: [f["corrupt_png"]], "corrupt image", False),
    ("text file", lambda f, m: [f["text"]], "not an image", False),
    ("empty file", lambda f, m: [f["empty_png"]], "not an image", False),
    ("truncated png", lambda f, m: [f["half_png"]], "corrupt image", False),
    ("truncated jpeg", lambda f, m: [f["half_jpg"]], "corrupt image", False),
    ("folder without images", lambda f, m: [f["no_images_dir"]], "no images in directory", False),
    ("empty labels", lambda f, m: [f["good"], "--labels", ""], "empty label set", False),
    ("blank labels", lambda f, m: [f["good"], "--labels", " , "], "empty label set", False),
    ("duplicate labels", lambda f, m: [f["good"], "--labels", "dog,Dog"], "duplicate label", False),
    ("empty label inside", lambda f, m: [f["good"], "--labels", "dog,,cat"], "empty label", False),
    ("257 labels", lambda f, m: [f["good"], "--labels", LABELS_257], "at most 256", False),
    ("unknown model name", lambda f, m: [f["good"], "--model", "no-such-model"], "unknown model", False),
    ("missing model file", lambda f, m: [f["good"], "--model", f["dir"] / "x.safetensors"], "model file not found", False),
    ("directory as model", lambda f, m: [f["good"], "--model", f["no_images_dir"]], "directory", False),
    ("truncated model", lambda f, m: [f["good"], "--model", f["trunc_model"]], "truncated", False),
    ("random bytes model", lambda f, m: [f["good"], "--model", f["random_model"]], "not safetensors", False),
    ("fake zip checkpoint", lambda f, m: [f["good"], "--model", f["fake_zip"]], "cannot read checkpoint", False),
    ("malicious pickle", lambda f, m: [f["good"], "--model", f["pickle"]], "checkpoint", False),
    ("unknown backbone in config", lambda f, m: [f["good"], "--model", f["unknown_backbone"]], "buildable", False),
    ("wrong field type", lambda f, m: [f["good"], "--model", f["wrong_type"]], "wrong type", False),
    ("wrong list field", lambda f, m: [f["good"], "--model", f["wrong_list"]], "wrong type", False),
    ("instance model as semantic", lambda f, m: [f["good"], "--model", m], "not a zeroseg model", False),
    ("architecture without weights", lambda f, m: [f["good"], "--model", "lseg_tiny_minilm"], "without bundled", False),
    ("negative window", lambda f, m: [f["good"], "--window", "-5"], "must be >= 64", True),
    ("window of one pixel", lambda f, m: [f["good"], "--window", "1"], "must be >= 64", True),
    ("too many windows", lambda f, m: [f["large"], "--window", "64", "--short-side", "0"], "passes", False),
    ("negative short side", lambda f, m: [f["good"], "--short-side", "-3"], "must be >= 0", True),
    ("text short side", lambda f, m: [f["good"], "--short-side", "abc"], "expected an integer", True),
    ("huge short side", lambda f, m: [f["good"], "--short-side", "100000"], "megapixels", False),
    ("4000x1 image", lambda f, m: [f["long_strip"]], "megapixels", False),
    ("20000x20000 png", lambda f, m: [f["big_png"]], "decompression bomb", False),
    ("20000x20000 jpeg", lambda f, m: [f["big_jpg"]], "decompression bomb", False),
    ("48 MP png header", lambda f, m: [f["over_png"]], "over the limit", False),
    ("48 MP jpeg header", lambda f, m: [f["over_jpg"]], "over the limit", False),
    ("48 MP png, limit raised", lambda f, m: [f["over_png"], "--max-input-pixels", str(10 ** 9)], "corrupt image",
     False),
    ("low input limit", lambda f, m: [f["good"], "--max-input-pixels", "100"], "over the limit", False),
    ("zero max pixels", lambda f, m: [f["good"], "--max-pixels", "0"], "must be >= 1", True),
    ("template with a named field", lambda f, m: [f["good"], "--template", "{x} {}"], "exactly one", False),
    ("template with two slots", lambda f, m: [f["good"], "--template", "a {} {}"], "exactly one", False),
    ("template without slot", lambda f, m: [f["good"], "--template", "a photo"], "has no '{}'", False),
    ("malformed template", lambda f, m: [f["good"], "--template", "a {"], "malformed", False),
    ("device tpu", lambda f, m: [f["good"], "--device", "tpu"], "unknown device", False),
    ("device cuda:99", lambda f, m: [f["good"], "--device", "cuda:99"], "cuda:99", False),
    ("output is a file", lambda f, m: [f["good"], "--out", f["blocker"] / "sub"], "cannot write", False),
    ("bad spectral features", lambda f, m: [f["good"], "--refine", "spectral", "--spectral-features", "dino"],
     "spectral feature source", False),
    ("bad fusion", lambda f, m: [f["good"], "--refine", "spectral", "--fusion", "vote"], "invalid choice", True),
]


@pytest.mark.parametrize("case", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_segment_bad_input(case, files, instance_model, tiny_model_file, tmp_path, capsys):
    _, build, message, usage = case
    argv = with_defaults("segment", build(files, instance_model),
                         {"--labels": "dog,grass,other", "--model": tiny_model_file, "--out": tmp_path / "out"})
    rc, out, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, message, usage)
    no_temp_files(tmp_path)
    assert not files["pwned"].exists()  # the pickle's payload never ran


INSTANCE_CASES = [
    ("missing image", lambda f: [f["dir"] / "missing.png"], "image not found", False),
    ("corrupt image", lambda f: [f["corrupt_png"]], "corrupt image", False),
    ("empty labels", lambda f: [f["good"], "--labels", ""], "empty label set", False),
    ("257 labels", lambda f: [f["good"], "--labels", LABELS_257], "at most 256", False),
    ("nan threshold", lambda f: [f["good"], "--score-threshold", "nan"], "must be a number in", True),
    ("threshold above one", lambda f: [f["good"], "--score-threshold", "2"], "must be a number in", True),
    ("negative max detections", lambda f: [f["good"], "--max-detections", "-1"], "must be >= 1", True),
    ("zero max detections", lambda f: [f["good"], "--max-detections", "0"], "must be >= 1", True),
    ("negative nms iou", lambda f: [f["good"], "--nms-across-labels", "-1"], "must be a number in", True),
    ("semantic model as instance model", lambda f: [f["good"], "--model", f["trunc_model"]], "truncated", False),
    ("missing instance model", lambda f: [f["good"], "--model", f["dir"] / "none.safetensors"], "not a file", False),
    ("4000x1 image", lambda f: [f["long_strip"]], "too elongated", False),
    ("20000x20000 png", lambda f: [f["big_png"]], "decompression bomb", False),
    ("48 MP jpeg header", lambda f: [f["over_jpg"]], "over the limit", False),
    ("device tpu", lambda f: [f["good"], "--device", "tpu"], "unknown device", False),
    ("output is a file", lambda f: [f["good"], "--out", f["blocker"] / "sub"], "cannot write", False),
]


@pytest.mark.parametrize("case", INSTANCE_CASES, ids=[c[0] for c in INSTANCE_CASES])
def test_instances_bad_input(case, files, instance_model, tmp_path, capsys):
    _, build, message, usage = case
    argv = with_defaults("instances", build(files),
                         {"--labels": "violin,pear", "--model": instance_model, "--out": tmp_path / "out"})
    rc, out, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, message, usage)
    no_temp_files(tmp_path)


TRAIN_CASES = [
    ("binary garbage config", lambda f, d: ["--config", f["garbage_yaml"], f"data={d}"], "not a UTF-8 text file"),
    ("config is a list", lambda f, d: ["--config", f["list_yaml"], f"data={d}"], "mapping"),
    ("missing config", lambda f, d: ["--config", f["dir"] / "none.yaml", f"data={d}"], "config file not found"),
    ("missing data", lambda f, d: [f"data={f['dir'] / 'nodata'}"], "not found"),
    ("zero epochs", lambda f, d: [f"data={d}", "epochs=0"], "epochs"),
    ("unknown key", lambda f, d: [f"data={d}", "nope=1"], "unknown config key"),
    ("style probability", lambda f, d: [f"data={d}", "style_augment=2"], "style_augment"),
    ("negative calibration classes", lambda f, d: [f"data={d}", "calibration_classes=-1"], "calibration_classes"),
    ("too many calibration classes", lambda f, d: [f"data={d}", "calibration_classes=5"], "calibration_classes"),
    ("unknown pretrained tag", lambda f, d: [f"data={d}", "model=lseg_lite0_minilm", "pretrained_backbone=laion"],
     "no pretrained weights"),
    ("pretrained with init_from", lambda f, d: [f"data={d}", "pretrained_backbone=imagenet", "init_from=x.safetensors"],
     "exclude each other"),
    ("device tpu", lambda f, d: [f"data={d}", "device=tpu"], "device"),
    ("text learning rate", lambda f, d: [f"data={d}", "lr=fast"], "lr"),
    ("override without value", lambda f, d: [f"data={d}", "lr"], "key=value"),
]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from test_train import make_dataset

    return make_dataset(tmp_path_factory.mktemp("train_data"))


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input(case, files, train_data, tmp_path, capsys):
    _, build, message = case
    argv = ["train"] + [str(a) for a in build(files, train_data)] + [f"out={tmp_path / 'run'}", "--no-progress"]
    rc, out, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, message)
    no_temp_files(tmp_path)


OTHER_CASES = [
    ("train-instances garbage config", lambda f: ["train-instances", "--config", f["garbage_yaml"], "data=x"],
     "not a UTF-8 text file", False),
    ("train-instances unknown model", lambda f: ["train-instances", f"data={f['dir']}", "model=zsi_nope",
                                                 f"out={f['dir'] / 'zrun'}", "--no-progress"], "", False),
    ("eval missing data", lambda f: ["eval", "--data", f["dir"] / "nodata", "--model", "default"], "not found", False),
    ("eval unknown protocol", lambda f: ["eval", "--data", f["dir"], "--protocol", "all"], "invalid choice", True),
    ("convert missing checkpoint", lambda f: ["convert", f["dir"] / "none.ckpt", f["dir"] / "o.safetensors"],
     "checkpoint not found", False),
    ("convert garbage checkpoint", lambda f: ["convert", f["fake_zip"], f["dir"] / "o.safetensors"],
     "cannot read checkpoint", False),
    ("convert malicious pickle", lambda f: ["convert", f["pickle"], f["dir"] / "o.safetensors"], "checkpoint", False),
    ("synth into a file", lambda f: ["data", "synth", "--out", f["blocker"] / "sub", "--train", "2"], "", False),
    ("eval-instances missing data", lambda f: ["eval-instances", "--data", f["dir"] / "nodata"], "", False),
]


@pytest.mark.parametrize("case", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_commands_bad_input(case, files, capsys):
    _, build, message, usage = case
    rc, out, err = run_cli(build(files), capsys)
    assert_one_line_error(rc, err, message, usage)
    assert not files["pwned"].exists()


def test_battery_size():
    bad = len(SEGMENT_CASES) + len(INSTANCE_CASES) + len(TRAIN_CASES) + len(OTHER_CASES)
    assert bad >= 60 and len(ODD_CASES) + len(ODD_OPTION_CASES) >= 20


# ----------------------------------------------------------------------------- odd but valid
def _save(path: Path, image: Image.Image, **kw) -> Path:
    image.save(path, **kw)
    return path


def _exif_rotated(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (60, 30), (200, 30, 30)).save(path, format="JPEG", exif=exif.tobytes())
    return path


def _gif(path: Path) -> Path:
    frames = [Image.new("P", (32, 24), i) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


rng0 = np.random.default_rng(1)
RGB = rng0.integers(0, 255, (30, 45, 3), dtype=np.uint8)
ODD_CASES = [
    ("16-bit grayscale png", lambda d: _save(d / "g16.png", Image.fromarray((RGB[..., 0].astype(np.uint16) * 257))),
     (30, 45)),
    ("cmyk jpeg", lambda d: _save(d / "cmyk.jpg", Image.fromarray(RGB).convert("CMYK")), (30, 45)),
    ("palette png", lambda d: _save(d / "pal.png", Image.fromarray(RGB).convert("P")), (30, 45)),
    ("rgba png", lambda d: _save(d / "rgba.png", Image.fromarray(RGB).convert("RGBA")), (30, 45)),
    ("gray+alpha png", lambda d: _save(d / "la.png", Image.fromarray(RGB).convert("LA")), (30, 45)),
    ("grayscale jpeg", lambda d: _save(d / "gray.jpg", Image.fromarray(RGB).convert("L")), (30, 45)),
    ("bilevel png", lambda d: _save(d / "bw.png", Image.fromarray(RGB).convert("1")), (30, 45)),
    ("animated gif", lambda d: _gif(d / "anim.gif"), (24, 32)),
    ("exif-rotated jpeg", lambda d: _exif_rotated(d / "rotated.jpg"), (60, 30)),
    ("1x1 image", lambda d: _save(d / "dot.png", Image.new("RGB", (1, 1), (4, 5, 6))), (1, 1)),
    ("3x5 image", lambda d: _save(d / "tiny.png", Image.new("RGB", (5, 3), (4, 5, 6))), (3, 5)),
    ("tiff", lambda d: _save(d / "img.tif", Image.fromarray(RGB)), (30, 45)),
    ("bmp", lambda d: _save(d / "img.bmp", Image.fromarray(RGB)), (30, 45)),
    ("webp", lambda d: _save(d / "img.webp", Image.fromarray(RGB)), (30, 45)),
    ("upper-case extension", lambda d: _save(d / "LOUD.PNG", Image.fromarray(RGB)), (30, 45)),
    ("unicode file name", lambda d: _save(d / "été photo ☀.png", Image.fromarray(RGB)), (30, 45)),
    ("float tiff", lambda d: _save(d / "float.tif", Image.fromarray(RGB[..., 0].astype(np.float32))), (30, 45)),
    ("16-bit rgb png via I;16", lambda d: _save(d / "i16.png", Image.fromarray(RGB[..., 1].astype(np.uint16))),
     (30, 45)),
]
ODD_OPTION_CASES = [
    ("unicode labels", ["--labels", "狗,草地,другое"]),
    ("labels with spaces", ["--labels", "  dog , tall grass ,other "]),
    ("256 labels", ["--labels", ",".join(f"l{i}" for i in range(256))]),
    ("literal braces in template", ["--template", "{{a}} photo of {}"]),
    ("keep size", ["--short-side", "0"]),
    ("window larger than image", ["--window", "512"]),
]


@pytest.mark.parametrize("case", ODD_CASES, ids=[c[0] for c in ODD_CASES])
def test_segment_odd_but_valid_images(case, tiny_model_file, tmp_path, capsys):
    _, make, (h, w) = case
    path = make(tmp_path)
    rc, out, err = run_cli(["segment", path, "--labels", "dog,other", "--model", tiny_model_file,
                            "--out", tmp_path / "out"], capsys)
    assert rc == 0, err
    mask = Image.open(tmp_path / "out" / f"{path.stem}.png")
    assert mask.size == (w, h) and mask.mode == "P"
    assert json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())["labels"] == ["dog", "other"]
    no_temp_files(tmp_path)


@pytest.mark.parametrize("case", ODD_OPTION_CASES, ids=[c[0] for c in ODD_OPTION_CASES])
def test_segment_odd_but_valid_options(case, files, tiny_model_file, tmp_path, capsys):
    _, tail = case
    argv = ["segment", files["good"], "--model", tiny_model_file, "--out", tmp_path / "out"] + tail
    if "--labels" not in tail:
        argv += ["--labels", "dog,other"]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "out" / "good.json").read_text())
    labels = [s.strip() for s in argv[argv.index("--labels") + 1].split(",")]
    assert record["labels"] == labels


def test_instances_odd_but_valid(instance_model, tmp_path, capsys):
    paths = [make(tmp_path) for _, make, _ in ODD_CASES[:9]]
    rc, out, err = run_cli(["instances", *paths, "--labels", "狗,pear", "--model", instance_model,
                            "--out", tmp_path / "out"], capsys)
    assert rc == 0, err
    coco = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(coco["images"]) == len(paths)
    no_temp_files(tmp_path)


def test_same_stem_inputs_never_overwrite_each_other(tiny_model_file, tmp_path, capsys):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    colours = {"a.jpg": (200, 0, 0), "a.png": (0, 200, 0), "a_1.png": (0, 0, 200), "sub/a.png": (90, 90, 90),
               "a.png.png": (5, 5, 5)}
    for name, c in colours.items():
        Image.new("RGB", (20 + len(name), 16), c).save(d / name)
    inputs = [d / n for n in colours]
    rc, out, err = run_cli(["segment", *inputs, "--labels", "dog,other", "--model", tiny_model_file,
                            "--out", tmp_path / "out"], capsys)
    assert rc == 0, err
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted(r["image"] for r in records) == sorted(str(p) for p in inputs)  # one output set per input
    for r in records:  # and each label map has its own input's size
        stem = Path(r["image"])
        assert (r["image_size"]["width"], r["image_size"]["height"]) == Image.open(stem).size


# ----------------------------------------------------------------------------- memory bounds
MEMORY_SCRIPT = """
import resource, sys
from zeroseg.cli import main
rc = main(sys.argv[1:])
print("RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


@pytest.mark.parametrize("which", ["long_strip", "big_png", "over_jpg"])
def test_memory_bound_on_huge_or_elongated_images(which, files, tiny_model_file, tmp_path):
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "segment", str(files[which]), "--labels", "a,b",
                           "--model", str(tiny_model_file), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (6 << 30, 6 << 30)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("zeroseg: error: ")
    rss_mb = int(proc.stdout.split("RSS_KB")[1]) / 1024
    assert rss_mb < 1500, rss_mb  # torch + MiniLM + the tiny model take ~700 MB; the image adds nothing


# ----------------------------------------------------------------------------- training leftovers
def test_training_start_removes_stale_temp_files(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".state.pt.k3j2l1.tmp", out / ".last.safetensors.x9y8z7.tmp", out / ".log.csv.abc123.tmp"]
    for f in stale:
        f.write_bytes(b"half written" * 1000)
    keep = out / ".notes.tmp"  # not a name zeroseg writes: left alone
    keep.write_text("mine")
    from test_train import TINY

    tiny = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k != "model_overrides"]
    tiny += [f"model_overrides.{k}={v}" for k, v in TINY["model_overrides"].items()]
    rc, _, err = run_cli(["train", "--no-progress", f"data={train_data}", f"out={out}", *tiny, "max_steps=1"], capsys)
    assert rc == 0, err
    assert not any(f.exists() for f in stale) and keep.exists()


def test_training_error_starts_on_its_own_line(train_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(train_data, data)
    index = json.loads((data / "index.json").read_text())
    (data / index["splits"]["train"][3]["image"]).write_bytes(b"not a png")
    from test_train import TINY

    tiny = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k != "model_overrides"]
    tiny += [f"model_overrides.{k}={v}" for k, v in TINY["model_overrides"].items()]
    rc, _, err = run_cli(["train", f"data={data}", f"out={tmp_path / 'run'}", *tiny, "seed=0"], capsys)
    assert rc == 2 and "Traceback" not in err
    at = err.index("zeroseg: error: ")
    assert at == 0 or err[at - 1] in "\r\n", repr(err[max(0, at - 80):at + 40])
    assert "epoch 1" in err[:at]  # the progress bar was on screen when the error came
    assert "not an image" in err[at:] and err[at:].count("\n") == 1
