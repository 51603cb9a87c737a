"""Inference time of two instance model files, alternating per image in one run (timings on a
shared machine drift; only what is measured side by side compares).

Run: .venv/bin/python benchmarks/bench_instance_speed.py --data DIR --a FILE --b default-instances [--images 20]
Each image of the test split is asked the 37 unseen names with `detect`'s defaults (its score
threshold 0.05, each file's relay and mask naming); writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_results

from zeroseg.data.dataset import SynthDataset
from zeroseg.instance_segmenter import load_instance_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--a", required=True, help="first model file (or name)")
    parser.add_argument("--b", default="default-instances", help="second model file (or name)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--out", default="instance_speed")
    args = parser.parse_args()
    data = SynthDataset(args.data, "test")
    labels = list(data.unseen)
    models = {"a": load_instance_model(args.a), "b": load_instance_model(args.b)}
    images = [data.load(i)[0] for i in range(min(args.images, len(data)))]
    for seg in models.values():  # warm-up: first calls allocate
        seg.detect(images[0], labels)
    seconds: dict[str, list[float]] = {"a": [], "b": []}
    for image in images:
        for key, seg in models.items():
            start = time.perf_counter()
            seg.detect(image, labels)
            seconds[key].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    write_results(args.out, {"a": args.a, "b": args.b, "images": len(images), "labels": len(labels),
                             "threads": torch.get_num_threads(), "median_s": median,
                             "ratio_b_over_a": round(median["b"] / median["a"], 3),
                             "settings": {k: seg.relay_settings() for k, seg in models.items()}})


if __name__ == "__main__":
    main()
