"""Official LSeg checkpoints: every released layout loads; the function matches the official code."""
import json

import numpy as np
import pytest
import torch
from conftest import DTYPES, SHARED_LSEG, official_layouts, synthetic_tensor

from zeroseg import load_model
from zeroseg.api import Segmenter
from zeroseg.errors import ZerosegError
from zeroseg.models.loading import (
    model_from_official_state_dict,
    translate_official_keys,
)

LAYOUTS = official_layouts()


def layout_checkpoint(layout: dict) -> dict:
    """A Lightning-style checkpoint with exactly the layout's keys, shapes and dtypes.

    Each tensor is one stored element broadcast to its shape (stride 0), so a 1.5 GB
    checkpoint costs a few kilobytes; shapes and dtypes are exact.
    """
    sd = {k: torch.zeros((), dtype=DTYPES[dt]).expand(shape) for k, (shape, dt) in layout["keys"].items()}
    return {"state_dict": sd, "epoch": 0}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_official_layout_loads_without_missing_or_unexpected_keys(name, tmp_path):
    layout = LAYOUTS[name]
    path = tmp_path / "lseg.ckpt"
    torch.save(layout_checkpoint(layout), path)
    kw = layout["kwargs"]
    seg = load_model(path, arch_option=kw["arch_option"], block_depth=kw["block_depth"])
    # every checkpoint key is either loaded or one of the documented unused CLIP image-tower keys
    model_sd, text_sd, unused, unknown = translate_official_keys(layout["keys"])
    assert unknown == []
    assert all(k.startswith("net.clip_pretrained.visual.") or k == "net.clip_pretrained.logit_scale" for k in unused)
    assert set(seg.model.state_dict()) == set(model_sd)
    assert set(seg.text_encoder.tower.state_dict()) == set(text_sd)
    assert len(model_sd) + len(text_sd) + len(unused) == layout["num_keys"]
    for k, v in seg.model.state_dict().items():
        assert tuple(v.shape) == tuple(model_sd[k][0]), k
    backbone = kw["backbone"]
    assert seg.config.embed_dim == (768 if "RN50x16" in backbone else 512)
    assert seg.config.arch_option == kw["arch_option"]


def test_arch_option_must_match_the_checkpoint(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save(layout_checkpoint(LAYOUTS["clip_vitb32_384/arch_option=2"]), path)
    with pytest.raises(ZerosegError, match="arch_option=1 .* or 2"):
        load_model(path)  # has block weights, arch_option 0 given
    path0 = tmp_path / "b.ckpt"
    torch.save(layout_checkpoint(LAYOUTS["clip_vitb32_384/arch_option=0"]), path0)
    with pytest.raises(ZerosegError, match="lacks"):
        load_model(path0, arch_option=2, block_depth=2)


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save(layout_checkpoint(LAYOUTS["clip_vitb32_384/arch_option=0"]), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZerosegError, match="truncated") as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_foreign_checkpoint_names_what_is_missing(tmp_path):
    path = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(4, 3, 3, 3)}}, path)
    with pytest.raises(ZerosegError, match="not an LSeg checkpoint"):
        load_model(path)
    layout = layout_checkpoint(LAYOUTS["clip_vitb32_384/arch_option=0"])
    del layout["state_dict"]["net.scratch.refinenet2.out_conv.weight"]
    layout["state_dict"]["net.scratch.extra.weight"] = torch.zeros(1)
    torch.save(layout, path)
    with pytest.raises(ZerosegError, match="unexpected keys.*net.scratch.extra.weight"):
        load_model(path)
    del layout["state_dict"]["net.scratch.extra.weight"]
    torch.save(layout, path)
    with pytest.raises(ZerosegError, match="1 missing .*decoder.fusion.1.out_conv.weight"):
        load_model(path)


# -- numerical equivalence with the official LSegNet ---------------------------------------

def _reference_cases():
    if not (SHARED_LSEG / "reference_cases.json").is_file():
        return []
    return json.loads((SHARED_LSEG / "reference_cases.json").read_text())


@pytest.mark.skipif(not SHARED_LSEG.is_dir(), reason="../shared/fixtures/lseg is absent (only in the project's CI)")
@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: c["name"])
def test_matches_official_reference_outputs(case):
    layout_name = ("zs/" if case.get("zs") else "") + f"{case['backbone']}/arch_option={case['arch']}"
    layout = LAYOUTS[layout_name]
    # the CLIP image tower is never used by LSeg: leave it out to save time
    sd = {k[4:]: synthetic_tensor(k[4:], shape, dt) for k, (shape, dt) in layout["keys"].items()
          if not k.startswith("net.clip_pretrained.visual.")}
    model, text, cfg = model_from_official_state_dict(sd, arch_option=case["arch"], block_depth=case["depth"])
    seg = Segmenter(model, text, cfg)
    ref = np.load(SHARED_LSEG / "reference_outputs.npz")
    x = torch.from_numpy(ref[f"{case['name']}__input"])[None]
    expected = ref[f"{case['name']}__logits"]
    got = seg.logits(x, case["labels"])[0].numpy()
    assert got.shape == expected.shape == (len(case["labels"]), case["h"], case["w"])
    tol = 0.15 * expected.std()
    assert np.abs(got - expected).max() <= tol
    agree = (got.argmax(0) == expected.argmax(0)).mean()
    assert agree >= 0.98
