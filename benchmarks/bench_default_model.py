"""The default model on the synthetic test split: zero-shot quality, robustness to other drawing
styles and CPU inference time.

Run: .venv/bin/python benchmarks/bench_default_model.py --data DIR [--model default]
(DIR from `zeroseg data synth --out DIR`, default seed 0; add --update-inference to re-time only). Writes
benchmarks/results/default_model.json and, per protocol, metrics + charts under
benchmarks/results/eval_<protocol>/. Nothing here tunes anything on test data or unseen classes:
the one choice made (the GZS seen-score offset) is made on the val split with the model's
calibration classes (seen classes held out of its training), see zeroseg.eval.calibration.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, write_results

import zeroseg
from zeroseg.data.dataset import SynthDataset
from zeroseg.data.restyle import STYLES, restyle_split
from zeroseg.eval.calibration import choose_seen_offset, seen_offsets
from zeroseg.eval.protocols import evaluate
from zeroseg.models.loading import read_safetensors_metadata
from zeroseg.models.registry import bundled_weights_path


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


def model_extra(source: str) -> dict:
    path = bundled_weights_path(source) or Path(source)
    return json.loads(read_safetensors_metadata(path).get("extra", "{}"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", default="default_model", help="results name (benchmarks/results/NAME.json)")
    parser.add_argument("--no-styles", action="store_true", help="skip the re-styled test scenes")
    parser.add_argument("--only", default=None, help="comma-separated runs to do (e.g. fixed,fixed_shuffled_text)")
    parser.add_argument("--update-inference", action="store_true",
                        help="only re-measure the inference time and write it into the existing results file "
                             "(for a quiet machine: the full run shares the CPU with nothing, but the time is noisy)")
    args = parser.parse_args()

    seg = zeroseg.load_model(args.model)
    data = SynthDataset(args.data, "test")
    extra = model_extra(args.model)
    if args.update_inference:
        path = RESULTS / f"{args.out}.json"
        results = json.loads(path.read_text())
        seconds = round(inference_seconds(seg, data), 4)
        # every measurement stays on record: on a shared VM they spread widely
        history = results.setdefault("inference_measurements_s", [results.get("inference_s_per_image_median")])
        history.append(seconds)
        results["inference_threads"] = torch.get_num_threads()
        results["inference_s_per_image_median"] = seconds
        if "targets" in results:
            results["targets"]["inference<=0.15s"] = seconds <= 0.15
        results.pop("machine", None)  # write_results records this run's machine
        write_results(args.out, results)
        print("inference median", seconds, "s per image")
        return
    results: dict = {"model": args.model, "data": args.data, "test_images": len(data)}
    results["inference_s_per_image_median"] = round(inference_seconds(seg, data), 4)
    prefix = "" if args.out == "default_model" else f"{args.out}_"
    runs = {"fixed": ("fixed", None), "fixed_shuffled_text": ("fixed", "shuffle"), "gzs": ("gzs", None),
            "episode": ("episode", None), "episode_shuffled_text": ("episode", "shuffle")}
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
    for name, (protocol, control) in runs.items():
        m = evaluate(seg, args.data, protocol, out_dir=RESULTS / f"eval_{prefix}{name}", text_control=control,
                     max_images=args.max_images, progress=False)
        results[name] = dict(m["metrics"])
        print(name, m["headline"], flush=True)

    held = extra.get("calibration_classes") or []
    if held and (not args.only or "gzs" in args.only.split(",")):  # GZS calibration: chosen on val with the held-out seen classes, then applied to test
        cal = choose_seen_offset(seg, args.data, extra["labels"], held, progress=False)
        results["gzs_calibration"] = cal
        m = evaluate(seg, args.data, "gzs", out_dir=RESULTS / f"eval_{prefix}gzs_calibrated",
                     label_offsets=seen_offsets(extra["labels"], cal["offset"]), max_images=args.max_images,
                     progress=False)
        results["gzs_calibrated"] = dict(m["metrics"])
        print("gzs calibrated", cal["offset"], m["headline"], flush=True)

    if not args.no_styles:
        results["styles"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for style in STYLES:
                styled = restyle_split(args.data, Path(tmp) / style, style)
                m = evaluate(seg, styled, "fixed", max_images=args.max_images, progress=False,
                             out_dir=RESULTS / f"eval_{prefix}style_{style}" if style == "all" else None)
                g = evaluate(seg, styled, "gzs", max_images=args.max_images, progress=False)
                results["styles"][style] = {"fixed_miou_unseen": m["metrics"]["miou_unseen"],
                                            "gzs_miou_seen": g["metrics"]["miou_seen"]}
                print("style", style, results["styles"][style], flush=True)

    if args.only:
        write_results(args.out, results)
        return
    gzs = results.get("gzs_calibrated", results["gzs"])
    fixed, control = results["fixed"]["miou_unseen"], results["fixed_shuffled_text"]["miou_unseen"]
    results["targets"] = {
        "fixed_unseen_miou>=30": fixed >= 30,
        "shuffled_control<=fixed/3": control <= fixed / 3,
        "gzs_seen_miou>=60": gzs["miou_seen"] >= 60,
        "gzs_hiou>=20": gzs["hiou"] >= 20,
        "episode_unseen_fbiou>=75": results["episode"]["fbiou_unseen"] >= 75,
        "inference<=0.15s": results["inference_s_per_image_median"] <= 0.15,
    }
    write_results(args.out, results)


if __name__ == "__main__":
    main()
