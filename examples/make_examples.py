"""Regenerate the demo images in examples/images (deterministic).

Every object in them belongs to a class the default model never saw in training:
    .venv/bin/python examples/make_examples.py
"""
from pathlib import Path

import numpy as np
from PIL import Image

from zeroseg.data.synth import render_scene, unseen_classes

DEMO_CLASSES = ["tiger face", "bus", "violin", "pear", "castle", "duck"]
OUT = Path(__file__).parent / "images"


def main() -> None:
    assert set(DEMO_CLASSES) <= set(unseen_classes())
    OUT.mkdir(exist_ok=True)
    for i, required in enumerate(DEMO_CLASSES[:4]):
        rng = np.random.default_rng(1000 + i)
        image, _, present = render_scene(rng, DEMO_CLASSES, size=256, required=required)
        name = "_".join(p.replace(" ", "-") for p in present)
        Image.fromarray(image).save(OUT / f"{i + 1}_{name}.png", optimize=True)
        print(OUT / f"{i + 1}_{name}.png")


if __name__ == "__main__":
    main()
