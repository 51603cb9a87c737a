"""ONNX export: the exported graph computes what the PyTorch network computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CONV, TINY_VIT

from zeroseg.api import Segmenter
from zeroseg.cli import main
from zeroseg.errors import ZerosegError
from zeroseg.models.lseg import upsample_logits
from zeroseg.models.registry import create_model

pytest.importorskip("onnxruntime", reason="the onnx runtime is an optional dependency (CI installs it)")
from zeroseg.api import load_onnx_model  # noqa: E402
from zeroseg.export import OnnxLSeg, export_onnx  # noqa: E402

SMALL = {  # registered CPU configs, a locally built ViT, a torchvision ResNet, both regularization kinds
    "lseg_tiny_minilm": "lseg_tiny_minilm",
    "lseg_default_minilm": "lseg_default_minilm",
    "lseg_lite0_minilm": "lseg_lite0_minilm",
    "vit_tiny_local": dict(TINY_VIT),
    "resnet18_torchvision": {**TINY_CONV, "encoder": "resnet", "backbone": "resnet18"},
    "bottleneck_blocks": {**TINY_CONV, "arch_option": 1, "block_depth": 2},
    "depthwise_blocks": {**TINY_CONV, "arch_option": 2, "block_depth": 1},
}


@pytest.mark.parametrize("name", SMALL)
def test_onnx_matches_pytorch(name, minilm, tmp_path):
    torch.manual_seed(0)
    model = create_model(SMALL[name]).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    net = OnnxLSeg(path)
    assert net.config == model.config and net.stride == model.stride
    rng = np.random.default_rng(0)
    for h, w in ((64, 96), (2 * model.stride, 3 * model.stride)):  # dynamic height and width
        x = torch.randn(2, 3, h, w)  # dynamic batch
        text = torch.nn.functional.normalize(torch.randn(int(rng.integers(2, 6)), model.config.embed_dim), dim=1)
        with torch.no_grad():
            ref_pix = model.pixel_embeddings(x)
            ref = model(x, text)
        assert (net.pixel_embeddings(x) - ref_pix).abs().max() < 1e-4
        got = net(x, text)
        assert got.shape == ref.shape and (got - ref).abs().max() < 1e-3
        assert (got.argmax(1) == ref.argmax(1)).float().mean() > 0.999
        half = net(x, text, upsample=False)  # what the file holds: logits at half resolution
        assert half.shape[-2:] == (h // 2, w // 2) and (upsample_logits(half) - got).abs().max() < 1e-5


def test_segment_with_onnx_runtime_gives_the_same_label_maps(tiny_model_file, sample_images, tmp_path, capsys):
    from zeroseg import load_model

    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_model_file), str(out)]) == 0
    torch_seg, onnx_seg = load_model(tiny_model_file), load_model(out)
    assert isinstance(onnx_seg, Segmenter) and isinstance(onnx_seg.model, OnnxLSeg)
    labels = ["dog", "grass", "other"]
    for image in sorted(sample_images.iterdir()):
        a, b = torch_seg.segment(image, labels), onnx_seg.segment(image, labels)
        assert np.array_equal(a.label_map, b.label_map) and np.abs(a.probs - b.probs).max() < 1e-4
    rc = main(["segment", str(sample_images / "noise.png"), "--labels", "dog,other", "--model", str(out),
               "--runtime", "onnx", "--out", str(tmp_path / "o")])
    assert rc == 0 and (tmp_path / "o" / "noise.png").is_file()
    capsys.readouterr()


def test_onnx_errors_are_one_line(tiny_model_file, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ZerosegError, match="cannot read ONNX model"):
        load_onnx_model(bad)
    rc = main(["segment", str(bad), "--labels", "a,b", "--runtime", "onnx", "--model", str(tiny_model_file)])
    assert rc == 2 and "zeroseg export" in capsys.readouterr().err
    rc = main(["export", str(tiny_model_file), str(tmp_path / "m.txt")])
    assert rc == 2 and ".onnx" in capsys.readouterr().err


def test_zsi_export_reproduces_detections(tmp_path, capsys):
    import onnxruntime as ort

    from zeroseg.export import export_zsi_onnx
    from zeroseg.models.zsi import create_zsi_model, save_zsi_model

    torch.manual_seed(0)
    tiny = {"backbone": "resnet10t", "fpn_channels": 16, "representation_size": 32, "mask_layers": [16, 16],
            "embed_dim": 32, "min_size": 64, "max_size": 128, "train_min_sizes": None,
            "anchor_sizes": [8, 16, 32, 64, 128], "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20],
            "box_batch_size_per_image": 32}
    model = create_zsi_model("zsi_resnet10t_fpn64", **tiny).eval()
    path = export_zsi_onnx(model, tmp_path / "zsi.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(3)
    for (h, w), labels in (((80, 96), 5), ((120, 64), 2)):  # other sizes and label counts than traced
        image = torch.rand(3, h, w, generator=gen)
        emb = torch.nn.functional.normalize(torch.randn(labels, 32, generator=gen), dim=1)
        with torch.no_grad():
            ref = model([image], emb)[0]
        boxes, scores, lab, masks = session.run(None, {"image": image.numpy(), "class_embeddings": emb.numpy()})
        assert boxes.shape == tuple(ref["boxes"].shape) and masks.shape == tuple(ref["masks"].shape)
        assert np.array_equal(lab, ref["labels"].numpy())
        assert np.abs(boxes - ref["boxes"].numpy()).max() < 1e-3 and np.abs(scores - ref["scores"].numpy()).max() < 1e-4
        assert np.abs(masks - ref["masks"].numpy()).max() < 1e-3
    saved = tmp_path / "zsi.safetensors"
    save_zsi_model(saved, model)
    assert main(["export", str(saved), str(tmp_path / "cli.onnx")]) == 0 and (tmp_path / "cli.onnx").is_file()
    capsys.readouterr()


def test_default_model_onnx_gives_identical_label_maps_on_the_example_images(tmp_path):
    from pathlib import Path

    from zeroseg import load_model

    examples = sorted((Path(__file__).resolve().parents[1] / "examples" / "images").glob("*.png"))
    assert len(examples) == 4
    out = tmp_path / "default.onnx"
    assert main(["export", "default", str(out)]) == 0
    torch_seg, onnx_seg = load_model("default"), load_model(out)
    assert onnx_seg.label_offsets == torch_seg.label_offsets and "other" in torch_seg.label_offsets  # calibration travels
    labels = ["tiger face", "bus", "violin", "pear", "castle", "duck", "other"]
    for image in examples:
        a, b = torch_seg.segment(image, labels), onnx_seg.segment(image, labels)
        # identical wherever the answer is not a float tie: two labels within 1e-5 in probability
        # (the runtimes' rounding differs by about that much) may come out either way
        top2 = np.sort(a.probs, axis=0)[-2:]
        tie = (top2[1] - top2[0]) < 1e-5
        assert np.array_equal(a.label_map[~tie], b.label_map[~tie]), image.name
        assert tie.mean() < 1e-4, (image.name, int(tie.sum()))
        with torch.no_grad():
            x = torch_seg.prepare(torch_seg.as_rgb_array(image))
            x = torch_seg._pad(x)
            ref = torch_seg.model.pixel_embeddings(x)
        assert (onnx_seg.model.pixel_embeddings(x) - ref).abs().max() < 1e-4


def test_an_onnx_file_of_another_format_version_is_refused_with_one_line(tiny_model_file, sample_images, tmp_path,
                                                                       capsys):
    import onnx

    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_model_file), str(out)]) == 0
    proto = onnx.load(str(out))
    for entry in proto.metadata_props:
        if entry.key == "format":
            entry.value = "zeroseg/lseg-onnx-1"  # an older export: full-resolution logits
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    with pytest.raises(ZerosegError, match="export it again"):
        load_onnx_model(old)
    capsys.readouterr()
    rc = main(["segment", str(sample_images / "noise.png"), "--labels", "a,b", "--model", str(old),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "lseg-onnx-1" in err[0]
