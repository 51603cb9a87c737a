import hashlib
import json
import math
import os
from pathlib import Path

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
