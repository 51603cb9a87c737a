"""Training throughput: 2-process DDP (gloo, 1 thread each) vs 1 process (2 threads).

Run: .venv/bin/python benchmarks/bench_ddp.py --data DIR   (results: benchmarks/results/ddp.json)
Same global batch, crop and steps in both runs; images/s from the engine's summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_results


def run(cmd: list[str], env: dict) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    common = ["--no-progress", f"data={args.data}", "model=lseg_default_minilm", "crop_size=128",
              "batch_size=16", f"max_steps={args.steps}", "epochs=1", "num_workers=1", "log_every=1000"]
    tmp = Path(tempfile.mkdtemp())
    try:
        env = dict(os.environ)
        single = run([sys.executable, "-m", "zeroseg.train", *common, f"out={tmp / 'one'}", "num_threads=2"], env)
        env.update(OMP_NUM_THREADS="1")
        torchrun = str(Path(sys.executable).parent / "torchrun")
        double = run([torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "zeroseg.train", *common,
                      f"out={tmp / 'two'}", "num_threads=1"], env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results("ddp", {
        "steps": args.steps, "global_batch": 16, "crop": 128,
        "one_process_images_per_second": single["images_per_second"],
        "two_process_images_per_second": double["images_per_second"],
        "ddp_over_single_ratio": round(double["images_per_second"] / single["images_per_second"], 3),
        "note": "both runs use the same 2 CPU cores; a ratio above 1 means two 1-thread processes use them better than one 2-thread process",
    })


if __name__ == "__main__":
    main()
