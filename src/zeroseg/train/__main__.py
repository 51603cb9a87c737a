"""``python -m zeroseg.train [--instances] [--config FILE] [--resume DIR_OR_STATE] [key=value ...]``.

Under ``torchrun --nproc_per_node N -m zeroseg.train ...`` every process runs this and they
train together (DDP); only rank 0 prints, logs and saves. The options: ``zeroseg.train.commands``.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """``python -m zeroseg.train ...`` is ``zeroseg train ...`` (one place handles user errors)."""
    from ..cli import main as cli_main  # startup: the CLI sits above the training layer

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--instances"]:  # torchrun -m zeroseg.train --instances ...
        return cli_main(["train-instances", *argv[1:]])
    return cli_main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
