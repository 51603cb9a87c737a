"""The LSeg network: shapes, label-order equivariance, spatial regularization, registry."""
import pytest
import torch
from conftest import TINY_CONV, TINY_VIT

from zeroseg.errors import ZerosegError
from zeroseg.models.blocks import SpatialRegularization
from zeroseg.models.registry import create_model, get_config, list_models


@pytest.mark.parametrize("arch", [1, 2])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_spatial_regularization_is_equivariant_to_label_order(arch, depth):
    torch.manual_seed(0)
    block = SpatialRegularization(arch, depth, "lrelu")
    x = torch.randn(2, 5, 9, 11)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-6)


def test_spatial_regularization_depth_counts_blocks():
    torch.manual_seed(0)
    reg = SpatialRegularization(2, 3, "relu")
    x = torch.randn(1, 3, 6, 6)
    conv = reg.block.conv
    manual = x
    for _ in range(2):
        manual = torch.relu(conv(manual.reshape(3, 1, 6, 6)).reshape(1, 3, 6, 6))
    manual = conv(manual.reshape(3, 1, 6, 6)).reshape(1, 3, 6, 6)  # last block: no activation
    assert torch.allclose(reg(x), manual, atol=1e-6)
    bottleneck = SpatialRegularization(1, 1, "relu")
    expected = bottleneck.block.conv(x.reshape(3, 1, 6, 6)).reshape(1, 3, 6, 6) + x.amax(1, keepdim=True)
    assert torch.allclose(bottleneck(x), expected, atol=1e-6)
    assert torch.equal(SpatialRegularization(0, 5)(x), x)


@pytest.mark.parametrize("cfg", [TINY_VIT, TINY_CONV], ids=["vit", "convnet"])
def test_lseg_logits_shape_and_label_equivariance(cfg):
    torch.manual_seed(0)
    model = create_model(dict(cfg), arch_option=1, block_depth=2).eval()
    x = torch.randn(2, 3, 64, 96)
    text = torch.randn(4, 384)
    with torch.no_grad():
        out = model(x, text)
        perm = torch.tensor([2, 3, 1, 0])
        out_perm = model(x, text[perm])
    assert out.shape == (2, 4, 64, 96)
    assert torch.allclose(out[:, perm], out_perm, atol=1e-5)


def test_plain_logits_are_scaled_cosines():
    torch.manual_seed(0)
    model = create_model(dict(TINY_CONV)).eval()
    x = torch.randn(1, 3, 64, 64)
    text = torch.randn(3, 384)
    with torch.no_grad():
        pixels = model.pixel_embeddings(x)
        out = model(x, text)
    assert torch.allclose(pixels.norm(dim=1), torch.ones(1, 32, 32), atol=1e-5)
    assert out.abs().max() <= model.logit_scale + 1e-4
    # at a pixel of the half-resolution grid, the x2 upsampling (align_corners) keeps corners exact
    cos = torch.nn.functional.normalize(text, dim=-1) @ pixels[0, :, 0, 0]
    assert torch.allclose(out[0, :, 0, 0], cos / 0.07, atol=1e-4)


def test_registry_lists_official_architectures():
    names = list_models()
    for n in ("lseg_vitl16_384", "lseg_vitb32_384", "lseg_rn50x16_vitl16_384", "lseg_zs_resnet101"):
        assert n in names
    cfg = get_config("lseg_vitl16_384")
    assert cfg.hooks == [5, 11, 17, 23] and cfg.widths == [256, 512, 1024, 1024]
    assert get_config("lseg_vitb32_384").hooks == [2, 5, 8, 11]
    from zeroseg.errors import ZerosegError

    with pytest.raises(ZerosegError, match="unknown model configuration"):
        get_config("nope")


@pytest.mark.parametrize("name", list_models())
def test_one_factory_builds_every_registered_architecture(name):
    """`zeroseg.create_model` builds LSeg and ZSI architectures alike (on the meta device: no memory)."""
    import zeroseg
    from zeroseg.models.lseg import LSegNet
    from zeroseg.models.registry import model_family
    from zeroseg.models.zsi import ZSIModel

    with torch.device("meta"):
        model = zeroseg.create_model(name)
        again = zeroseg.create_model(model.config, embed_dim=64)  # a config object takes overrides too
    assert isinstance(model, LSegNet if model_family(name) == "lseg" else ZSIModel)
    assert type(again) is type(model) and again.config.embed_dim == 64 != model.config.embed_dim


def test_architectures_and_weights_are_listed_apart():
    from zeroseg.models.registry import list_weights

    assert set(list_weights()) == {"default", "default-instances"}
    assert not set(list_weights()) & set(list_models())
    assert "zsi_resnet10t_fpn64" in list_models("zsi") and "lseg_vitl16_384" in list_models("lseg")
    with pytest.raises(ZerosegError, match="unknown model configuration"):
        create_model("default")  # weights, not an architecture: load_model("default") loads them


def test_public_api_names_resolve():
    import zeroseg

    for name in zeroseg.__all__:
        assert getattr(zeroseg, name) is not None, name


def test_lseg_and_zsi_files_pick_their_text_encoder_by_one_rule(tmp_path):
    """A model trained with the test-only random:D encoder is loaded with it, LSeg and ZSI alike."""
    from zeroseg import load_instance_model, load_model
    from zeroseg.models.loading import save_safetensors
    from zeroseg.models.zsi import create_zsi_model, save_zsi_model
    from zeroseg.text.random import RandomTextEncoder

    lseg = create_model(dict(TINY_CONV, embed_dim=32))
    save_safetensors(tmp_path / "l.safetensors", lseg, extra={"train_text_encoder": "random:32"})
    zsi = create_zsi_model("zsi_resnet10t_fpn64", embed_dim=32, fpn_channels=16, representation_size=32,
                           mask_layers=[16, 16])
    save_zsi_model(tmp_path / "z.safetensors", zsi, extra={"train_text_encoder": "random:32"})
    for loaded in (load_model(tmp_path / "l.safetensors"), load_instance_model(tmp_path / "z.safetensors")):
        inner = loaded.text_encoder.inner
        assert isinstance(inner, RandomTextEncoder) and inner.dim == 32
    save_safetensors(tmp_path / "m.safetensors", create_model(dict(TINY_CONV)))  # no extra: the config's (MiniLM)
    assert type(load_model(tmp_path / "m.safetensors").text_encoder.inner).__name__ == "MiniLMEncoder"
