"""Do prompt templates help the default model name classes it never trained on? Checked on the
val split with the model's calibration classes only (held-out *seen* classes standing in for
unseen ones), never with unseen classes or test images.

For each template setting: the model is asked about "other" + the 10 calibration classes on the
val images that show one (the fixed zero-shot setting), the offset on "other" is re-chosen for
that setting (`choose_background_offset`, the model's own offset switched off), and the
calibration-class mIoU at that offset is reported. A setting that beats "plain" by more than the
spread between similar templates would be worth training with.

  .venv/bin/python benchmarks/bench_prompts.py --data DIR [--model default]
"""
from __future__ import annotations

import argparse
import time

from common import write_results

from zeroseg import load_model
from zeroseg.eval.calibration import choose_background_offset
from zeroseg.models.loading import model_extra
from zeroseg.models.registry import bundled_weights_path

SETTINGS = {
    "plain": ["{}"],
    "an emoji of a {}": ["an emoji of a {}"],
    "a drawing of a {}": ["a drawing of a {}"],
    "a photo of a {}": ["a photo of a {}"],
    "an icon of a {}": ["an icon of a {}"],
    "ensemble of 4": ["an emoji of a {}", "a drawing of a {}", "a photo of a {}", "an icon of a {}"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    start = time.perf_counter()
    path = bundled_weights_path(args.model) if args.model == "default" else args.model
    held = model_extra(path)["calibration_classes"]
    seg = load_model(args.model)
    seg.label_offsets = {}
    rows = {}
    for name, templates in SETTINGS.items():
        seg.set_templates(templates)
        r = choose_background_offset(seg, args.data, held, progress=False)
        rows[name] = {"templates": templates, "miou_calibration": r["miou_calibration"], "offset": r["offset"],
                      "images": r["num_images"]}
        print(f"{name:20s} calibration-class mIoU {r['miou_calibration']:.1f} (other offset {r['offset']})",
              flush=True)
    write_results("prompts", {"model": args.model, "data": args.data, "split": "val", "calibration_classes": held,
                              "settings": rows, "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()
