"""The training commands' arguments: ``zeroseg train`` and ``zeroseg train-instances``
(also ``python -m zeroseg.train``, under torchrun too). Parsing and config resolution only:
the work is ``engine.train`` / ``instances.train_instances``."""
from __future__ import annotations

import argparse
import json
import os

from .engine import load_config, read_state, train
from .instance_trainer import load_instance_config, train_instances

EPILOG = """\
overrides: key=value pairs, values parsed as YAML, nested keys with dots, e.g.
  data=runs/synth epochs=20 lr=1e-3 model_overrides.features=32 text_encoder=minilm
defaults: src/zeroseg/train/default.yaml (see docs)
distributed: torchrun --nproc_per_node N -m zeroseg.train --config FILE ...
"""


def build_parser(prog: str = "zeroseg train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train an LSeg model on the seen classes of a dataset.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config file (keys as in default.yaml)")
    p.add_argument("--resume", metavar="DIR_OR_STATE",
                   help="continue a run from its directory or state.pt (its config is the base; "
                        "--config and overrides apply on top)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--edge-loss-weight", type=float, default=None, metavar="W",
                   help="SAZS boundary loss: L = L_seg + W * L_edge (adds an edge head; default 0 = off)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def _resolve_and_train(args: argparse.Namespace, load, train, overrides: list[str]) -> int:
    """Config from defaults <- resumed run <- --config <- overrides; print it or train with it."""
    import yaml  # startup


    base = read_state(args.resume)["config"] if args.resume else None
    cfg = load(args.config, overrides, base=base)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    """Resolve the config from parsed arguments and train; raises ZerosegError for user errors."""

    overrides = list(args.overrides)
    if args.edge_loss_weight is not None:
        overrides.append(f"edge_loss_weight={args.edge_loss_weight}")
    return _resolve_and_train(args, load_config, train, overrides)


INSTANCES_EPILOG = """\
overrides: key=value pairs, values parsed as YAML, nested keys with dots, e.g.
  data=runs/synth epochs=4 lr=2e-4 model_overrides.ba_rpn=false backbone_init=default
defaults: src/zeroseg/train/instances.yaml
distributed: torchrun --nproc_per_node N -m zeroseg.train --instances --config FILE ...
"""


def build_instances_parser(prog: str = "zeroseg train-instances") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train a ZSI instance model on the seen classes of a dataset.",
                                epilog=INSTANCES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config file (keys as in instances.yaml)")
    p.add_argument("--resume", metavar="DIR_OR_STATE", help="continue a run from its directory or state.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def run_instances(args: argparse.Namespace) -> int:
    """Resolve an instance-training config from parsed arguments and train."""

    return _resolve_and_train(args, load_instance_config, train_instances, list(args.overrides))
