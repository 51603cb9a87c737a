"""ZSI on the synthetic benchmark: quality (ablation + control) and the semantic heads' time overhead.

Quality, on the test split (pycocotools, mask IoU):
  ZSI   unseen labels only, images with an unseen instance: mAP@0.5, Recall@100 at IoU 0.4/0.5/0.6
  GZSI  seen + unseen labels, all images: seen / unseen / harmonic mean
for two models trained with the same recipe (examples/train_default_instances.yaml), with and
without BA-RPN + synchronized background, plus the shuffled-embedding control (each unseen class
described by another unseen class's name) for the full model.

Overhead: inference (and one training step) of the ZSI network vs torchvision's plain Mask R-CNN
with the same backbone, FPN, box and mask heads, timed alternately in one run; ratio = ZSI / plain.

  .venv/bin/python benchmarks/bench_zsi.py --data DIR --full runs/zsi_ba/last.safetensors \
      --baseline runs/zsi_plain/last.safetensors [--max-images N]

With several models per arm (one per training seed: ``--full A B --baseline C D``) each is
evaluated and ``seeds`` summarizes every arm's headline numbers as mean and half-range (half of
max - min), so the difference between the arms can be judged against run-to-run spread.
``--name`` chooses the results file (benchmarks/results/<name>.json); with ``--reuse`` a model
whose file (by SHA-256) that results file already holds is not evaluated again, so seeds
trained later can be added to an ablation without re-running the earlier ones.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, write_results

from zeroseg.data.coco_instances import read_instances, write_instance_annotations
from zeroseg.eval.coco_metrics import category_split, format_instance_summary
from zeroseg.eval.instance_protocols import evaluate_instances
from zeroseg.instance_segmenter import load_instance_model
from zeroseg.io import sha256_hex
from zeroseg.models.zsi import create_plain_maskrcnn, create_zsi_model


def overhead(num_labels: int, repeats: int, size: int = 256) -> dict:
    """Median seconds of ZSI vs plain Mask R-CNN (random weights, same architecture sizes)."""
    torch.manual_seed(0)
    zsi = create_zsi_model("zsi_resnet10t_fpn64", train_min_sizes=None)
    plain = create_plain_maskrcnn(zsi.config, num_classes=num_labels + 1)
    plain.backbone.load_state_dict(zsi.backbone.state_dict())  # identical backbone weights
    emb = torch.nn.functional.normalize(torch.randn(num_labels, zsi.config.embed_dim), dim=1)
    images = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 40:150, 30:120] = 1
    masks[1, 100:220, 140:240] = 1
    target = {"boxes": torch.tensor([[30.0, 40.0, 120.0, 150.0], [140.0, 100.0, 240.0, 220.0]]),
              "labels": torch.tensor([1, 2]), "masks": masks}
    runs = {
        "inference": {
            "zsi": lambda: zsi.eval()(images[:1], emb),
            "plain": lambda: plain.eval()(images[:1]),
        },
        "train_step": {
            "zsi": lambda: sum(zsi.train()(images[:2], emb, [target] * 2).values()).backward(),
            "plain": lambda: sum(plain.train()(images[:2], [target] * 2).values()).backward(),
        },
    }
    out = {}
    for kind, fns in runs.items():
        times: dict[str, list[float]] = {"zsi": [], "plain": []}
        grad = torch.enable_grad() if kind == "train_step" else torch.no_grad()
        with grad:
            for name, fn in fns.items():  # warm-up
                torch.manual_seed(1)
                fn()
            for _ in range(repeats):  # alternate, so drifts in machine load hit both alike
                for name, fn in fns.items():
                    torch.manual_seed(1)
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        z, p = statistics.median(times["zsi"]), statistics.median(times["plain"])
        out[kind] = {"zsi_seconds": round(z, 4), "plain_maskrcnn_seconds": round(p, 4),
                     "ratio": round(z / p, 3), "overhead_percent": round(100 * (z / p - 1), 1)}
        print(kind, out[kind])
    return out


def quality(model_path: str, data: str, gt: dict, seen: list, unseen: list, max_images: int | None,
            controls: bool, out_dir: Path) -> dict:
    seg = load_instance_model(model_path)
    rows = {}
    settings = [("zsi", None), ("gzsi", None)] + ([("zsi", "shuffle")] if controls else [])
    for mode, control in settings:
        r = evaluate_instances(seg, gt, data, seen, unseen, mode, text_control=control, max_images=max_images,
                               out_dir=out_dir / f"{mode}{'_' + control if control else ''}", progress=False)
        print(f"{model_path} {mode} {control or ''}\n{format_instance_summary(r)}")
        key = mode + ("_shuffled_text" if control else "")
        if mode == "zsi":
            rows[key] = {"images": r["images"], "map50": r["map50"], "recall100": r["recall100"],
                         "seconds_per_image": r["seconds_per_image"]}
        else:
            rows[key] = {"images": r["images"],
                         **{part: {"map50": r[part]["map50"], "recall100": r[part]["recall100"]}
                            for part in ("seen", "unseen", "hm")}}
    return rows


def headline(rows: dict) -> dict:
    """The numbers an ablation is judged by, from one model's quality rows."""
    return {"zsi_unseen_map50": rows["zsi"]["map50"], "zsi_recall100@0.5": rows["zsi"]["recall100"]["0.5"],
            "gzsi_seen_map50": rows["gzsi"]["seen"]["map50"], "gzsi_unseen_map50": rows["gzsi"]["unseen"]["map50"],
            "gzsi_hm_map50": rows["gzsi"]["hm"]["map50"]}


def spread(per_seed: list[dict]) -> dict:
    """Mean and half-range of each headline number over seeds."""
    out = {}
    for key in per_seed[0]:
        values = [float(h[key] or 0.0) for h in per_seed]
        out[key] = {"mean": round(statistics.fmean(values), 4),
                    "half_range": round((max(values) - min(values)) / 2, 4), "values": values}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--full", required=True, nargs="+", help="model(s) with BA-RPN + synchronized background")
    parser.add_argument("--baseline", required=True, nargs="+", help="same recipe without them (ba_rpn=false)")
    parser.add_argument("--name", default="zsi", help="results file name")
    parser.add_argument("--reuse", action="store_true", help="keep rows of models already in the results file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/eval_zsi")
    args = parser.parse_args()

    index_file = Path(args.data) / args.split / "instances.json"
    if not index_file.is_file():
        write_instance_annotations(args.data, [args.split], progress=False)
    gt = read_instances(args.data, args.split)
    seen, unseen = category_split(gt)
    start = time.perf_counter()
    previous = {}
    if args.reuse and (RESULTS / f"{args.name}.json").is_file():
        old = json.loads((RESULTS / f"{args.name}.json").read_text())
        if (old.get("split"), old.get("max_images"), old.get("data")) == (args.split, args.max_images, args.data):
            previous = {r["model_sha256"]: r for r in old.values() if isinstance(r, dict) and "model_sha256" in r}
    results = {"overhead_vs_plain_maskrcnn": overhead(len(seen) + len(unseen), args.repeats)}
    seeds = {}
    for arm, folder, paths in (("full_ba_rpn_sync_bg", "full", args.full),
                               ("without_ba_rpn_sync_bg", "baseline", args.baseline)):
        per_seed = []
        for i, path in enumerate(paths):
            # the first full model also gets the shuffled-name control; later seeds are keyed _seed<i>
            digest = sha256_hex(Path(path).read_bytes())
            controls = arm.startswith("full") and i == 0
            rows = previous.get(digest)
            if rows is None or (controls and "zsi_shuffled_text" not in rows):
                rows = quality(path, args.data, gt, seen, unseen, args.max_images, controls,
                               Path(args.out) / (folder + (f"_seed{i}" if i else "")))
                rows = {"model": str(path), "model_sha256": digest, **rows}
            else:
                print(f"{path}: rows reused from {args.name}.json")
            results[arm + (f"_seed{i}" if i else "")] = rows
            per_seed.append(headline(rows))
        seeds[arm] = spread(per_seed)
    if len(args.full) > 1 or len(args.baseline) > 1:
        results["seeds"] = seeds
    results.update({"data": args.data, "split": args.split, "max_images": args.max_images,
                    "models": {"full": args.full, "baseline": args.baseline},
                    "seen_classes": len(seen), "unseen_classes": len(unseen),
                    "iou_type": "segm", "seconds": round(time.perf_counter() - start, 1),
                    "numpy": np.__version__})
    write_results(args.name, results)


if __name__ == "__main__":
    main()
