"""``python -m zeroseg.segment ...`` is ``zeroseg segment ...``; the form ``torchrun`` runs:

    torchrun --nproc_per_node 2 -m zeroseg.segment images/ --labels "dog,grass,other" --out out
"""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
