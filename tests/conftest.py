import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, os.cpu_count() or 1))

DATA = Path(__file__).parent / "data"
SHARED_LSEG = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "lseg"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


def official_layouts() -> dict:
    """The official LSeg state_dict layouts (vendored from ../shared/fixtures/lseg)."""
    return json.loads((DATA / "lseg_state_dict_layout.json").read_text())["models"]


def synthetic_tensor(key: str, shape: list[int], dtype: str) -> torch.Tensor:
    """The fixtures' deterministic synthetic weight for ``key`` (rule in shared/fixtures/lseg/README.md)."""
    g = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:15], 16))
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    if key.endswith("num_batches_tracked"):
        t = torch.zeros(shape)
    elif key.endswith("running_var"):
        t = 1 + 0.1 * z.abs()
    elif len(shape) == 1 and key.endswith(".weight"):
        t = 1 + 0.02 * z
    elif len(shape) >= 2:
        t = z / math.sqrt(math.prod(shape[1:]))
    else:
        t = 0.02 * z
    return t.to(DTYPES[dtype])


@pytest.fixture(scope="session")
def minilm():
    from zeroseg.text import create_text_encoder

    return create_text_encoder("minilm")


TINY_VIT = {"encoder": "vit", "backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"img_size": 64, "depth": 4},
            "features": 16, "embed_dim": 384, "text_encoder": "minilm", "input_size": 64}
TINY_CONV = {"encoder": "timm", "backbone": "resnet18", "features": 16, "embed_dim": 384,
             "text_encoder": "minilm", "input_size": 64}


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A small randomly initialised zeroseg model saved as .safetensors (MiniLM text encoder)."""
    from zeroseg.models.loading import save_safetensors
    from zeroseg.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(dict(TINY_VIT)).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_safetensors(path, model)
    return path


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory):
    """Two small generated images (PNG and JPEG) of odd sizes."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(d / "noise.png")
    yy, xx = np.mgrid[0:70, 0:50]
    Image.fromarray(np.stack([xx * 5, yy * 3, (xx + yy) * 2], -1).astype(np.uint8)).save(d / "ramp.jpg")
    return d
