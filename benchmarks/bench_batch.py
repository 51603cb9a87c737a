"""Batch inference throughput: 500 synthetic 256x256 images with the default model.

Whole commands are timed (start-up and model loading included), one after another in one run,
and reported as images/s and as ratios to the plain one-process run:
  1 process; 1 process with decoding threads (--workers 2); 1 process, --batch-size 8;
  2 torchrun processes (1 thread each, the file list sharded by rank).
Each run's label maps are compared with the plain run's (they must be equal byte for byte,
except --batch-size, where batched kernels may round differently: pixel agreement is reported).

Run: .venv/bin/python benchmarks/bench_batch.py   (results: benchmarks/results/batch.json)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_results
from PIL import Image

from zeroseg.data.synth import generate


def label_maps(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png")) if not p.stem.endswith("_overlay")}


def main(n: int = 500, size: int = 256) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", n_train=0, n_val=0, n_test=n, size=size, seed=7, progress=False)
        images = tmp / "data" / "test" / "images"
        index = json.loads((tmp / "data" / "index.json").read_text())
        labels = ",".join(index.get("unseen", [])[:8] + ["other"])
        zeroseg = [sys.executable, "-m", "zeroseg.segment", str(images), "--labels", labels]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "zeroseg.segment", str(images), "--labels", labels]
        runs = {"1 process": (zeroseg, {}), "1 process, --workers 2": (zeroseg + ["--workers", "2"], {}),
                "1 process, --batch-size 8": (zeroseg + ["--batch-size", "8"], {}),
                "2 torchrun processes": (torchrun, {"OMP_NUM_THREADS": "1"})}
        results, reference = {}, None
        for name, (cmd, env) in runs.items():
            out = tmp / name.replace(" ", "_").replace(",", "")
            start = time.perf_counter()
            proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True,
                                  env={**os.environ, **env, "PYTHONWARNINGS": "ignore"})
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            maps = label_maps(out)
            assert len(maps) == n, (name, len(maps))
            reference = reference or maps
            agree = float(np.mean([(maps[k] == reference[k]).mean() for k in reference]))
            identical = all(np.array_equal(maps[k], reference[k]) for k in reference)
            results[name] = {"seconds": round(seconds, 2), "images_per_second": round(n / seconds, 2),
                             "label_maps_identical_to_1_process": identical, "pixel_agreement": round(agree, 6)}
            print(name, results[name], flush=True)
        base = results["1 process"]["images_per_second"]
        for r in results.values():
            r["ratio_to_1_process"] = round(r["images_per_second"] / base, 3)
    write_results("batch", {"images": n, "size": size, "labels": labels.split(","), "runs": results})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    main(parser.parse_args().images)
