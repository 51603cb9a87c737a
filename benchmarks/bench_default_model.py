"""The default model on the synthetic test split: zero-shot quality and CPU inference time.

Run: .venv/bin/python benchmarks/bench_default_model.py --data DIR [--model default]
(DIR from `zeroseg data synth --out DIR`, default seed 0). Writes
benchmarks/results/default_model.json and, per protocol, metrics + charts under
benchmarks/results/eval_<protocol>/. Nothing here tunes anything: it only measures.
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import RESULTS, write_results

import zeroseg
from zeroseg.data.dataset import SynthDataset
from zeroseg.eval.protocols import evaluate


def inference_seconds(seg, data: SynthDataset, n: int = 30) -> float:
    """Median wall time of ``segment`` on 256x256 test images with the fixed label set."""
    labels = ["other"] + data.unseen
    times = []
    for i in range(min(n + 2, len(data))):
        image, _, _ = data[i]
        start = time.perf_counter()
        seg.segment(image, labels)
        if i >= 2:  # the first calls warm up allocators and the text cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()

    seg = zeroseg.load_model(args.model)
    data = SynthDataset(args.data, "test")
    results: dict = {"model": args.model, "data": args.data, "test_images": len(data)}
    results["inference_s_per_image_median"] = round(inference_seconds(seg, data), 4)
    runs = {"fixed": ("fixed", None), "fixed_shuffled_text": ("fixed", "shuffle"), "gzs": ("gzs", None),
            "episode": ("episode", None), "episode_shuffled_text": ("episode", "shuffle")}
    for name, (protocol, control) in runs.items():
        m = evaluate(seg, args.data, protocol, out_dir=RESULTS / f"eval_{name}", text_control=control,
                     max_images=args.max_images, progress=False)
        results[name] = {k: v for k, v in m["metrics"].items()}
        print(name, m["headline"])
    fixed, control = results["fixed"]["miou_unseen"], results["fixed_shuffled_text"]["miou_unseen"]
    results["targets"] = {
        "gzs_seen_miou>=60": results["gzs"]["miou_seen"] >= 60,
        "fixed_unseen_miou>=30": fixed >= 30,
        "fixed_unseen>=2x_shuffled": fixed >= 2 * control,
        "inference<=0.25s": results["inference_s_per_image_median"] <= 0.25,
    }
    write_results("default_model", results)


if __name__ == "__main__":
    main()
