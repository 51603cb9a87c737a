"""Shared helpers for benchmarks: timing medians and writing results JSON."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

from zeroseg.io import write_bytes_atomic

RESULTS = Path(__file__).parent / "results"


def tests_on_path() -> None:
    """Make the test helpers in tests/ importable (shared by tests and benchmarks)."""
    import sys

    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def median_seconds(fn, repeat: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "torch": torch.__version__}


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    # atomic: a crash never leaves half a results file
    write_bytes_atomic(path, (json.dumps({"machine": machine(), **results}, indent=2) + "\n").encode())
    print(json.dumps(results, indent=2))
    print(f"-> {path}")
    return path
