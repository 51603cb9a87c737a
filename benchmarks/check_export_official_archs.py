"""Export the official-checkpoint architectures (random weights, same shapes) to ONNX and check
onnxruntime against PyTorch on one 384x384 input: LSeg ViT-L/16, ViT-B/32 and the zero-shot
ResNet-101. Writes benchmarks/results/export_official_archs.json.

  .venv/bin/python benchmarks/check_export_official_archs.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import write_results

from zeroseg.export import OnnxLSeg, export_onnx
from zeroseg.models.registry import create_model


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("lseg_vitb32_384", "lseg_zs_resnet101", "lseg_vitl16_384"):
            torch.manual_seed(0)
            model = create_model(name).eval()
            t0 = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", sample_size=96)
            export_s = time.perf_counter() - t0
            net = OnnxLSeg(path)
            x = torch.randn(1, 3, 384, 416)
            text = F.normalize(torch.randn(5, model.config.embed_dim), dim=1)
            with torch.no_grad():
                ref_pix, ref = model.pixel_embeddings(x), model(x, text)
            pix, out = net.pixel_embeddings(x), net(x, text)
            results[name] = {"export_seconds": round(export_s, 1), "onnx_mb": round(path.stat().st_size / 1e6, 1),
                             "max_abs_diff_pixel_embeddings": float((pix - ref_pix).abs().max()),
                             "max_abs_diff_logits": float((out - ref).abs().max()),
                             "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean())}
            print(name, results[name], flush=True)
            path.unlink()
    write_results("export_official_archs", results)


if __name__ == "__main__":
    main()
