"""Training under faults: `kill -9` at random moments, then `--resume`, N times in a row.

For `zeroseg train` and `zeroseg train-instances` (tiny models on a small synthetic dataset):
1. an uninterrupted reference run;
2. the same run killed with SIGKILL at a random moment, N times, each time restarted with
   `--resume DIR` (or from scratch if no state was written yet), then allowed to finish.
After every kill, each non-temporary file in the run folder must be complete (state.pt loads with
`weights_only=True`, every .safetensors opens); temporary files may exist but must be gone once
the next start has cleaned them. At the end the weights must be bitwise identical to the
reference run's. Writes benchmarks/results/kill_resume.json.

  .venv/bin/python benchmarks/bench_kill_resume.py [--kills 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import write_results
from safetensors.torch import load_file

TASKS = {
    "train": ["model=lseg_tiny_minilm", "model_overrides.backbone=resnet10t", "model_overrides.features=16",
              "model_overrides.embed_dim=32", "text_encoder=random:32", "crop_size=64", "batch_size=4",
              "epochs=15", "num_workers=0", "log_every=1", "state_every=2", "keep_last=2", "num_threads=1",
              "seed=1"],
    "train-instances": ["model_overrides.backbone=resnet10t", "model_overrides.fpn_channels=16",
                        "model_overrides.representation_size=32", "model_overrides.mask_layers=[16,16]",
                        "model_overrides.embed_dim=32", "model_overrides.min_size=64",
                        "model_overrides.max_size=128", "model_overrides.train_min_sizes=null",
                        "text_encoder=random:32", "batch_size=2", "epochs=5", "num_workers=0", "log_every=1",
                        "state_every=2", "keep_last=2", "val_images=2", "num_threads=1", "seed=1"],
}


def command(task: str, data: Path, out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "zeroseg.cli", task, "--no-progress"]
    if resume:
        cmd += ["--resume", str(out)]
    return cmd + [f"data={data}", f"out={out}", *TASKS[task]]


def check_files(out: Path) -> dict:
    """Complete files only (temporary ones aside): returns counts of each kind."""
    temps, complete = [], 0
    for f in sorted(out.iterdir()) if out.is_dir() else []:
        if f.name.endswith(".tmp"):
            temps.append(f.name)
        elif f.name == "state.pt":
            torch.load(f, map_location="cpu", weights_only=True)  # raises if half written
            complete += 1
        elif f.suffix == ".safetensors":
            load_file(str(f))
            complete += 1
    return {"temp_files": len(temps), "complete_files": complete}


def _logged_rows(out: Path) -> int:
    try:
        return len((out / "log.csv").read_text().splitlines())
    except FileNotFoundError:
        return 0


def run_with_kills(task: str, data: Path, out: Path, kills: int, rng: random.Random, env: dict) -> dict:
    """Kill the run ``kills`` times: each time once it has logged a new training step, after a
    further random 0-1.5 s (so kills land in steps, validation and checkpoint writes alike)."""
    events = []
    while True:
        resume = (out / "state.pt").is_file()
        rows = _logged_rows(out)
        proc = subprocess.Popen(command(task, data, out, resume), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        if len(events) < kills:
            deadline = time.time() + 300
            while proc.poll() is None and _logged_rows(out) <= rows and time.time() < deadline:
                time.sleep(0.02)
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                state = check_files(out)
                step = None
                if (out / "state.pt").is_file():
                    step = int(torch.load(out / "state.pt", map_location="cpu", weights_only=True)["global_step"])
                events.append({"extra_delay_s": round(delay, 3), "resumed": resume, "state_step": step, **state})
                continue
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"{task} failed: {proc.stderr.read().decode()[-2000:]}")
        break  # finished (after all kills, or earlier: then fewer kills are reported)
    return {"kills": events, "final": check_files(out)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict = {"kills_per_task": args.kills}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        subprocess.run([sys.executable, "-m", "zeroseg.cli", "data", "synth", "--out", str(data), "--train", "24",
                        "--val", "4", "--test", "4", "--size", "64"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)
        for task in TASKS:
            start = time.perf_counter()
            ref = tmp / f"{task}_ref"
            subprocess.run(command(task, data, ref, False), check=True, stdout=subprocess.DEVNULL, env=env)
            ref_seconds = time.perf_counter() - start
            killed = tmp / f"{task}_killed"
            start = time.perf_counter()
            record = run_with_kills(task, data, killed, args.kills, rng, env)
            a, b = load_file(str(ref / "last.safetensors")), load_file(str(killed / "last.safetensors"))
            identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            results[task] = {"reference_seconds": round(ref_seconds, 1), "kills_done": len(record["kills"]),
                             "killed_run_seconds": round(time.perf_counter() - start, 1),
                             "weights_identical_to_uninterrupted": identical,
                             "temp_files_left_at_end": record["final"]["temp_files"],
                             "max_temp_files_right_after_a_kill": max(e["temp_files"] for e in record["kills"]),
                             "kills": record["kills"]}
            print(task, json.dumps({k: v for k, v in results[task].items() if k != "kills"}), flush=True)
    write_results("kill_resume", results)
    ok = all(results[t]["weights_identical_to_uninterrupted"] and results[t]["temp_files_left_at_end"] == 0
             and results[t]["kills_done"] == args.kills for t in TASKS)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
