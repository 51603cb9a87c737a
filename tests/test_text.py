"""Text encoders: MiniLM (offline), word vectors, CLIP towers from local files, the cache."""
import json

import numpy as np
import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.text import CachedTextEncoder, create_text_encoder


def test_minilm_embeds_meaning_offline(minilm):
    emb = minilm.encode(["dog", "puppy", "truck"])
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.1  # a dog is nearer a puppy than a truck


def test_cache_makes_repeated_labels_free(minilm):
    cached = minilm if isinstance(minilm, CachedTextEncoder) else CachedTextEncoder(minilm)
    first = cached.encode(["zebra", "giraffe"])
    misses = cached.misses
    again = cached.encode(["giraffe", "zebra", "giraffe"])
    assert cached.misses == misses  # nothing new was embedded
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])


def test_templates_are_averaged():
    enc = create_text_encoder("minilm", templates=["a photo of a {}", "a drawing of a {}"], cache=False)
    plain = create_text_encoder("minilm", cache=False)
    got = enc.encode(["cat"])[0]
    a, b = plain.encode(["a photo of a cat", "a drawing of a cat"])
    expected = torch.nn.functional.normalize(a + b, dim=0)
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ZerosegError, match="no '\\{\\}'"):
        create_text_encoder("minilm", templates=["no slot"])


def test_word_vectors_average_multi_word_labels(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 2\nred 1 0\ncar 0 1\nblue 0.6 0.8\n")
    enc = create_text_encoder(f"wordvec:{path}", cache=False)
    assert enc.dim == 2
    got = enc.encode(["red car", "Blue"])
    assert torch.allclose(got[0], torch.tensor([0.5, 0.5]) / np.sqrt(0.5), atol=1e-6)
    assert torch.allclose(got[1], torch.tensor([0.6, 0.8]), atol=1e-6)
    with pytest.raises(ZerosegError, match="no word of 'spaceship'"):
        enc.encode(["spaceship"])
    glove = tmp_path / "glove.txt"  # GloVe files have no header line
    glove.write_text("sun 1 2 2\nmoon 2 1 2\n")
    assert create_text_encoder(f"wordvec:{glove}").dim == 3


def test_clip_tower_from_a_local_open_clip_file(tmp_path):
    """``clip:<name>@file`` builds the open_clip model and takes weights from the file only."""
    import open_clip

    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    (tmp_path / "zs-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "zs-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("zs-tiny-clip")
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    enc = create_text_encoder(f"clip:zs-tiny-clip@{weights}", cache=False)
    assert enc.dim == 32
    tokens = open_clip.get_tokenizer("zs-tiny-clip")(["a red car"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)[0]
    assert torch.allclose(enc.encode(["a red car"])[0], expected, atol=1e-5)


def test_clip_without_local_weights_says_so():
    with pytest.raises(ZerosegError, match="needs local weights"):
        create_text_encoder("clip:ViT-B-32")
    with pytest.raises(ZerosegError, match="unknown text encoder"):
        create_text_encoder("bert")
