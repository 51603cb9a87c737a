"""The ``zeroseg`` command: parses arguments and calls the library. No logic lives only here."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .errors import ZerosegError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="a registered name (default), an official LSeg .ckpt or a zeroseg .safetensors")
    p.add_argument("--arch-option", type=int, default=0, choices=(0, 1, 2),
                   help="official checkpoints only: 0 none, 1 bottleneck, 2 depthwise blocks")
    p.add_argument("--block-depth", type=int, default=0, help="official checkpoints only")
    p.add_argument("--device", default="cpu")


def _add_refine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine", choices=("spectral",), default=None,
                   help="fuse the prediction with spectral eigen-segments (SAZS), without ground truth")
    p.add_argument("--fusion", choices=("select", "pool"), default="select",
                   help="select: per class, the eigen-segment best matching the prediction; "
                        "pool: per eigen-segment, the label of highest mean probability")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroseg", description="Zero-shot segmentation driven by language.")
    parser.add_argument("--version", action="version", version=f"zeroseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment images into the labels you name")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    p.add_argument("--labels", required=True, help='comma-separated label names, e.g. "dog,grass,other"')
    p.add_argument("--out", default="out", help="output directory (default: ./out)")
    p.add_argument("--short-side", type=int, default=None,
                   help="resize so the short side has this many pixels (default: the model's own setting)")
    p.add_argument("--window", type=int, default=None, help="sliding-window size in pixels (default: whole image)")
    p.add_argument("--multiscale", action="store_true", help="average scales 0.75-1.75 (slower, as in the paper)")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument("--template", action="append", default=None,
                   help='prompt template such as "a photo of a {}" (repeatable)')
    _add_refine_args(p)
    _add_model_args(p)

    p = sub.add_parser("convert", help="convert an official LSeg .ckpt to a zeroseg .safetensors (once)")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--arch-option", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--block-depth", type=int, default=0)

    sub.add_parser("models", help="list registered model names")

    p = sub.add_parser("data", help="benchmark data")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate the synthetic OpenMoji benchmark")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=3000)
    s.add_argument("--val", type=int, default=300)
    s.add_argument("--test", type=int, default=600)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train an LSeg model on seen classes (see `python -m zeroseg.train -h`)",
                       add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("eval", help="evaluate a model on a benchmark protocol")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="benchmark directory (with index.json)")
    p.add_argument("--protocol", choices=("fixed", "gzs", "episode"), default="fixed")
    p.add_argument("--out", default=None, help="write metrics.json and plots here")
    p.add_argument("--split", default="test")
    p.add_argument("--text-control", choices=("shuffle",), default=None,
                   help="shuffle: pair unseen names with the wrong unseen classes (control experiment)")
    p.add_argument("--max-images", type=int, default=None)
    _add_refine_args(p)
    p.add_argument("--oracle", action="store_true",
                   help="upper bound only: choose eigen-segments by IoU with the ground truth (SAZS's rule)")
    p.add_argument("--short-side", type=int, default=None,
                   help="resize before inference (default: the model's own setting; 0 keeps the size)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def cmd_segment(args) -> int:
    from .api import load_model
    from .io import collect_images, ensure_writable_dir, load_image, parse_labels
    from .viz import write_segmentation

    labels = parse_labels(args.labels)
    images = collect_images(args.inputs)
    out = ensure_writable_dir(args.out)
    segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    if args.template:
        segmenter.set_templates(args.template)
    options = dict(window=args.window, flip=args.flip, refine=args.refine,
                   refine_options={"method": args.fusion} if args.refine else None,
                   scales=(0.75, 1.0, 1.25, 1.5, 1.75) if args.multiscale else (1.0,))
    if args.short_side is not None:
        options["short_side"] = args.short_side
    from tqdm import tqdm

    stems: dict[str, int] = {}
    for path in tqdm(images, desc="segment", unit="img", disable=len(images) < 2, file=sys.stderr):
        image = load_image(path)
        seg = segmenter.segment(image, labels, **options)
        stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
        stems[path.stem] = stems.get(path.stem, 0) + 1
        written = write_segmentation(seg, image, out, stem,
                                     extra={"image": str(path), "model": segmenter.source})
        top = sorted(seg.fractions().items(), key=lambda kv: -kv[1])
        found = ", ".join(f"{k} {100 * v:.0f}%" for k, v in top if v >= 0.005)
        tqdm.write(f"{path}: {found} -> {written['overlay']}", file=sys.stdout)
    return 0


def cmd_convert(args) -> int:
    from .models.loading import load_official_checkpoint, save_safetensors

    start = time.perf_counter()
    model, text, cfg = load_official_checkpoint(args.checkpoint, args.arch_option, args.block_depth)
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        raise ZerosegError(f"output directory does not exist: {out.parent}")
    try:
        save_safetensors(out, model, text, extra={"converted_from": str(args.checkpoint)})
    except OSError as e:
        raise ZerosegError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out} ({cfg.description or cfg.backbone}) in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_models(args) -> int:
    from .models.registry import bundled_weights_path, list_models

    for name in list_models():
        path = bundled_weights_path(name)
        print(f"{name}{'  (bundled weights)' if path is not None else ''}")
    return 0


def cmd_data(args) -> int:
    from .data.synth import generate

    summary = generate(args.out, n_train=args.train, n_val=args.val, n_test=args.test, size=args.size,
                       seed=args.seed)
    print(f"wrote {summary['images']} images to {summary['out']} "
          f"({summary['images_per_second']:.0f} images/s; {summary['seen']} seen, {summary['unseen']} unseen classes)")
    return 0


def cmd_eval(args) -> int:
    from .api import load_model
    from .eval.protocols import evaluate, format_summary

    if args.out:
        from .io import ensure_writable_dir

        ensure_writable_dir(args.out)
    segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    metrics = evaluate(segmenter, args.data, args.protocol, out_dir=args.out, text_control=args.text_control,
                       split=args.split, max_images=args.max_images, seed=args.seed,
                       short_side=args.short_side, refine=args.refine, oracle=args.oracle,
                       refine_options={"method": args.fusion} if args.refine else None)
    print(format_summary(metrics))
    if args.out:
        print(f"metrics, per-class IoU chart and examples in {args.out}")
    return 0


COMMANDS = {"segment": cmd_segment, "convert": cmd_convert, "models": cmd_models, "data": cmd_data,
            "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # every option after "train" belongs to the training parser
        from .train.__main__ import build_parser as train_parser
        from .train.__main__ import run as train_run

        train_args = train_parser("zeroseg train").parse_args(argv[1:])

        def action() -> int:
            return train_run(train_args)
    else:
        args = build_parser().parse_args(argv)

        def action() -> int:
            return COMMANDS[args.command](args)
    try:
        return action()
    except ZerosegError as e:
        print(f"zeroseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zeroseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
