"""Synthetic benchmark generation speed (target: >= 100 images/s on 2 cores).

Run: .venv/bin/python benchmarks/bench_synth.py   (results: benchmarks/results/synth.json)
"""
from __future__ import annotations

import tempfile

from common import write_results

from zeroseg.data.synth import generate


def main(n: int = 600, size: int = 256) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(tmp, n_train=n, n_val=0, n_test=0, size=size, seed=123, progress=False)
    write_results("synth", {"images": n, "size": size, "seconds": summary["seconds"],
                            "images_per_second": summary["images_per_second"]})


if __name__ == "__main__":
    main()
