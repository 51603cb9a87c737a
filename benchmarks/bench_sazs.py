"""SAZS ablation on the synthetic benchmark: does shape-awareness help, and where?

Rows (fixed protocol on the test split: unseen mIoU and boundary F-score):
  plain                    - a model fine-tuned without the edge loss (control)
  + edge loss              - the same fine-tuning with --edge-loss-weight 0.3
  + spectral fusion        - plain model, `--refine spectral` (select rule, no ground truth), on
                             features of an ImageNet classifier that never saw a mask (--features)
  + spectral fusion (decoder features) - the same on the model's own decoder features
  both                     - edge-loss model + spectral fusion
  oracle (upper bound)     - spectral segments chosen by IoU with the ground truth (SAZS's rule)
and the spectral solver timing from benchmarks/results/spectral.json.

Both fine-tunings start from the same model (default: the embedded default model) with the
same schedule (default: its last training stage's recipe, vocabulary scenes included, at lr 2e-4),
run side by side at one thread each, so the edge loss is the only difference. Both then run with the starting model's
inference settings (its calibrated background offset and seen-class relay, chosen on val when it
was shipped), so "plain" is the model a user gets. Run:
  .venv/bin/python benchmarks/bench_sazs.py --data DIR [--init default] [--epochs 1] \
      [--config examples/train_default_stage3.yaml] [--features imagenet:efficientnet_lite0:1,2]
All test images with an unseen class are evaluated unless --max-images says otherwise.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import RESULTS, write_results

import zeroseg
from zeroseg.eval.protocols import evaluate
from zeroseg.models.registry import bundled_weights_path


def start_finetune(data: str, config: str, init: str, out: Path, edge_weight: float, epochs: int,
                   reuse: bool = False) -> tuple[str, subprocess.Popen | None]:
    """Start one fine-tuning run (1 thread, so that the two runs share the 2 cores side by side)."""
    if reuse and (out / "last.safetensors").is_file():  # re-evaluate without training again
        return str(out / "last.safetensors"), None
    cmd = [sys.executable, "-m", "zeroseg.train", "--no-progress", "--config", config,
           f"data={data}", f"out={out}", f"init_from={init}", "pretrained_backbone=null", f"epochs={epochs}", "lr=2.0e-4", "warmup_iters=0",
           f"edge_loss_weight={edge_weight}", "keep_last=1", "num_threads=1", "num_workers=1"]
    return str(out / "last.safetensors"), subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--init", default="default")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--config", default="examples/train_default_stage3.yaml",
                        help="fine-tuning recipe (default: the last stage of the embedded default model)")
    parser.add_argument("--runs", default="runs/sazs")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep fine-tuned models already in --runs")
    parser.add_argument("--features", default="imagenet:efficientnet_lite0:1,2",
                        help="spectral feature source (zeroseg.spectral.features.parse_feature_source)")
    args = parser.parse_args()
    init = str(bundled_weights_path(args.init) or args.init)
    runs = Path(args.runs)
    started = {"plain": start_finetune(args.data, args.config, init, runs / "plain", 0.0, args.epochs, args.reuse),
               "edge": start_finetune(args.data, args.config, init, runs / "edge", 0.3, args.epochs, args.reuse)}
    for name, (_, proc) in started.items():
        if proc is not None and proc.wait() != 0:
            sys.exit(f"bench_sazs: the {name} fine-tuning failed (exit {proc.returncode})")
    models = {name: path for name, (path, _) in started.items()}
    rows = {"plain": ("plain", None, False, None), "+ edge loss": ("edge", None, False, None),
            "+ spectral fusion": ("plain", "spectral", False, args.features),
            "+ spectral fusion (decoder features)": ("plain", "spectral", False, "decoder"),
            "both": ("edge", "spectral", False, args.features),
            "oracle upper bound (uses ground truth)": ("plain", "spectral", True, args.features)}
    table = {}
    segmenters = {}
    start = zeroseg.load_model(init)
    settings = {"label_offsets": dict(start.label_offsets), "relay_top_k": start.relay_top_k}
    for row, (model, refine, oracle, features) in rows.items():
        if model not in segmenters:
            segmenters[model] = zeroseg.load_model(models[model])
            segmenters[model].label_offsets = dict(settings["label_offsets"])
            segmenters[model].relay_top_k = settings["relay_top_k"]
        seg = segmenters[model]
        m = evaluate(seg, args.data, "fixed", refine=refine, oracle=oracle, max_images=args.max_images,
                     refine_options={"features": features} if refine else None, progress=False)
        table[row] = {"miou_unseen": m["metrics"]["miou_unseen"], "boundary_f": m["metrics"]["boundary_f"],
                      "seconds_per_image": m["seconds_per_image"]}
        print(row, table[row])
    spectral = json.loads((RESULTS / "spectral.json").read_text()) if (RESULTS / "spectral.json").is_file() else {}
    write_results("sazs_ablation", {"protocol": "fixed (unseen classes + other)", "finetune_epochs": args.epochs,
                                    "init": args.init, "finetune_config": args.config, "inference_settings": settings,
                                    "spectral_features": args.features,
                                    "test_images": m["num_images"], "rows": table, "spectral_timing": spectral.get("comparison")})


if __name__ == "__main__":
    main()
