"""The bundled instance model (ZSI) on the synthetic benchmark, with GZSI calibration chosen on
the val split with the model's calibration classes (never with unseen classes or test images).

  .venv/bin/python benchmarks/bench_default_instances.py --data DIR [--model default-instances]

Rows (test split, mask IoU, pycocotools): ZSI unseen mAP@0.5 and Recall@100 at IoU 0.4/0.5/0.6;
its shuffled-name control; GZSI seen / unseen / harmonic mean without and with calibration. The
model runs with the relay and mask naming its file records; --relay 0 switches the relay off
(the direct box head). With mask naming on, the ZSI rows are also given without it
("zsi_without_mask_naming", from the same detections: zeroseg.eval.instance_protocols.Renaming).
Writes benchmarks/results/default_instances.json and examples under eval_default_instances/.
"""
from __future__ import annotations

import argparse
import time

from common import RESULTS, write_results

from zeroseg.data.coco_instances import read_instances
from zeroseg.eval.coco_metrics import category_split, format_instance_summary
from zeroseg.eval.instance_protocols import Renaming, category_ids, choose_instance_calibration, evaluate_instances
from zeroseg.instance_segmenter import load_instance_model


def row(r: dict) -> dict:
    if r["mode"] == "zsi":
        return {"images": r["images"], "map50": r["map50"], "recall100": r["recall100"],
                "seconds_per_image": r["seconds_per_image"]}
    return {"images": r["images"], **{p: {"map50": r[p]["map50"], "recall100": r[p]["recall100"]}
                                      for p in ("seen", "unseen", "hm")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default-instances")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", default="default_instances")
    parser.add_argument("--relay", type=int, default=None, help="seen-class relay top-K (default: the file's; 0: off)")
    parser.add_argument("--file-calibration", action="store_true",
                        help="apply the GZSI calibration the model file records instead of choosing it on val again")
    args = parser.parse_args()
    start = time.perf_counter()
    seg = load_instance_model(args.model)
    if args.relay is not None:
        seg.relay_top_k = args.relay
    extra = seg.extra
    test = read_instances(args.data, "test")
    seen, unseen = category_split(test)
    out_dir = RESULTS / f"eval_{args.out}"
    # the model file's seen-class relay (chosen on val by `zeroseg calibrate-instances`)
    results: dict = {"model": args.model, "data": args.data, "relay": seg.relay_settings(),
                     "mask_naming": seg.extra.get("mask_naming")}
    weight = seg.naming_weight if seg.naming_active else 0.0
    for mode, control in (("zsi", None), ("zsi", "shuffle"), ("gzsi", None)):
        if mode == "zsi" and weight:  # one detection pass, scored with and without mask naming
            with Renaming(seg) as renaming:
                for w, key in ((0.0, "_without_mask_naming"), (weight, "")):
                    renaming.weight = w
                    r = evaluate_instances(renaming, test, args.data, seen, unseen, mode, text_control=control,
                                           max_images=args.max_images, progress=False,
                                           out_dir=out_dir / f"{mode}{'_' + control if control else ''}{key}")
                    print(mode, control or "", key, format_instance_summary(r), flush=True)
                    results[mode + ("_shuffled_text" if control else "") + key] = row(r)
            continue
        r = evaluate_instances(seg, test, args.data, seen, unseen, mode, text_control=control,
                               max_images=args.max_images, out_dir=out_dir / f"{mode}{'_' + control if control else ''}",
                               progress=False)
        print(mode, control or "", format_instance_summary(r), flush=True)
        results[mode + ("_shuffled_text" if control else "")] = row(r)
    held = extra.get("calibration_classes") or []
    if held:
        val = read_instances(args.data, "val")
        trained = category_ids(val, extra["labels"])
        if args.file_calibration:
            cal = {"calibration": seg.gzsi_calibration, "source": "the model file (chosen on val by calibrate-instances)"}
        else:
            cal = choose_instance_calibration(seg, val, args.data, trained, category_ids(val, held),
                                              max_images=args.max_images, progress=False)
        results["gzsi_calibration"] = cal
        # the test split's seen classes include the calibration classes; the offset lowers only
        # the classes the model trained on (InstanceSegmenter.detect's seen_labels)
        r = evaluate_instances(_TrainedOnly(seg, extra["labels"]), test, args.data, seen, unseen, "gzsi",
                               calibration=cal["calibration"], max_images=args.max_images, progress=False,
                               out_dir=out_dir / "gzsi_calibrated")
        print("gzsi calibrated", cal["calibration"], format_instance_summary(r), flush=True)
        results["gzsi_calibrated"] = row(r)
    zsi, g = results["zsi"], results.get("gzsi_calibrated", results["gzsi"])
    results["targets"] = {"zsi_unseen_map50>=20": (zsi["map50"] or 0) >= 0.20,
                          "zsi_recall100@0.5>=90": (zsi["recall100"]["0.5"] or 0) >= 0.90,
                          "gzsi_hm_map50>=15": (g["hm"]["map50"] or 0) >= 0.15}
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_results(args.out, results)


class _TrainedOnly:
    """Passes ``seen_labels`` = the classes the model trained on to ``detect``."""

    def __init__(self, inner, trained: list[str]):
        self.inner, self.trained, self.source = inner, list(trained), inner.source

    def detect(self, image, labels, *, seen_labels=None, calibration=0.0, **kw):
        return self.inner.detect(image, labels, seen_labels=[n for n in labels if n in self.trained],
                                 calibration=calibration, **kw)


if __name__ == "__main__":
    main()
