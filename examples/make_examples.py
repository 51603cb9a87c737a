"""The demo images in examples/images (deterministic; run to regenerate them).

Every object in them belongs to a class the default model never saw in training:
    .venv/bin/python examples/make_examples.py
"""
from pathlib import Path

import numpy as np
from PIL import Image

from zeroseg.data.synth import render_scene, unseen_classes

DEMO_CLASSES = ["tiger face", "bus", "violin", "pear", "castle", "duck"]
OUT = Path(__file__).parent / "images"


def demo_scenes() -> list[tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """(file name, image uint8 [256,256,3], label map (0 = other), class names present) per demo image."""
    assert set(DEMO_CLASSES) <= set(unseen_classes())
    scenes = []
    for i, required in enumerate(DEMO_CLASSES[:4]):
        image, label, present = render_scene(np.random.default_rng(1000 + i), DEMO_CLASSES, size=256,
                                             required=required)
        name = f"{i + 1}_" + "_".join(p.replace(" ", "-") for p in present) + ".png"
        scenes.append((name, image, label, present))
    return scenes


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, image, _, _ in demo_scenes():
        Image.fromarray(image).save(OUT / name, optimize=True)
        print(OUT / name)


if __name__ == "__main__":
    main()
