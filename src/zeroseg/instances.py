"""``python -m zeroseg.instances ...`` is ``zeroseg instances ...``; the form ``torchrun`` runs:

    torchrun --nproc_per_node 2 -m zeroseg.instances images/ --labels "dog,cat" --out out

The instance segmentation API itself: ``zeroseg.instance_segmenter`` (``load_instance_model``).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["instances", *sys.argv[1:]]))
