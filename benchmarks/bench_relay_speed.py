"""Cost of the seen-class relay: the default model on 256x256 test images with the fixed label set
("other" + 37 unseen), relay on (all training names) and off, alternating per image in one run,
so the ratio holds even on a busy machine; once per torch thread count asked for.

  .venv/bin/python benchmarks/bench_relay_speed.py --data DIR [--images 40] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_results

import zeroseg
from zeroseg.data.dataset import SynthDataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    args = parser.parse_args()
    seg = zeroseg.load_model()
    data = SynthDataset(args.data, "test")
    labels = ["other"] + data.unseen
    vocabulary = len(seg.relay_vocabulary)
    runs = {}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        runs[str(threads)] = time_relay(seg, data, labels, vocabulary, args.images)
        print(threads, "threads:", runs[str(threads)])
    write_results("relay_inference", {"images": args.images, "labels": len(labels), "vocabulary": vocabulary,
                                      "by_threads": runs})


def time_relay(seg, data: SynthDataset, labels: list[str], vocabulary: int, images: int) -> dict:
    """Median seconds per image with the relay over the whole vocabulary and with it off."""
    on: list[float] = []
    off: list[float] = []
    for i in range(min(len(data), images + 2)):
        image, _, _ = data[i]
        for k, times in ((vocabulary, on), (0, off)):
            seg.relay_top_k = k
            start = time.perf_counter()
            seg.segment(image, labels)
            if i >= 2:  # warm-up: allocators, text cache
                times.append(time.perf_counter() - start)
    return {"relay_on_median_s": round(statistics.median(on), 4), "relay_off_median_s": round(statistics.median(off), 4),
            "ratio_on_over_off": round(statistics.median(on) / statistics.median(off), 3)}


if __name__ == "__main__":
    main()
