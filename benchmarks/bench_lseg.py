"""LSeg forward cost at 480x480 (ViT-B/32) against the plain timm ViT, and the text cache.

Run: .venv/bin/python benchmarks/bench_lseg.py   (results: benchmarks/results/lseg_forward.json)
Weights are random (no downloads here); the cost of a forward pass does not depend on them.
"""
from __future__ import annotations

import time

import timm
import torch
from common import median_seconds, write_results

from zeroseg.api import Segmenter
from zeroseg.models.registry import create_model
from zeroseg.text.clip import ClipTextEncoder, build_text_tower

LABELS = ["dog", "grass", "sky", "tree", "building", "road", "person", "other"]


def main(size: int = 480, repeat: int = 5) -> None:
    torch.manual_seed(0)
    model = create_model("lseg_vitb32_384").eval()
    tower = build_text_tower(dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, output_dim=512))
    seg = Segmenter(model, ClipTextEncoder(tower, 512, name="clip:ViT-B-32 (random)"), model.config)
    vit = timm.create_model("vit_base_patch32_384", pretrained=False, img_size=size).eval()
    x = torch.randn(1, 3, size, size)

    with torch.no_grad():
        t_vit = median_seconds(lambda: vit(x), repeat)
        seg.logits(x, LABELS)  # fill the text cache
        t_lseg = median_seconds(lambda: seg.logits(x, LABELS), repeat)

    # text: first encoding of a label set vs. the same set again (served by the cache)
    fresh = [f"{w} {i}" for i, w in enumerate(LABELS)]
    start = time.perf_counter()
    seg.text_encoder.encode(fresh)
    t_text_first = time.perf_counter() - start
    t_text_again = median_seconds(lambda: seg.text_encoder.encode(fresh), repeat=20, warmup=0)

    write_results("lseg_forward", {
        "input": f"1x3x{size}x{size}", "labels": len(LABELS), "repeat": repeat,
        "timm_vit_b32_forward_s": round(t_vit, 4),
        "lseg_vitb32_forward_s": round(t_lseg, 4),
        "lseg_over_vit_ratio": round(t_lseg / t_vit, 2),
        "text_encode_first_s": round(t_text_first, 4),
        "text_encode_cached_s": round(t_text_again, 6),
        "text_cached_over_first_ratio": round(t_text_again / t_text_first, 5),
    })


if __name__ == "__main__":
    main()
