"""The default model's results table (Markdown) from benchmarks/results/*.json, for README.md
and src/zeroseg/weights/MODEL_CARD.md, so the quoted numbers are the measured ones.

  .venv/bin/python benchmarks/default_model_table.py       # prints the table
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def f(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def table() -> str:
    new, old = load("default_model"), load("default_model_from_scratch_v1")
    g, gc = new["gzs"], new.get("gzs_calibrated", {})
    og = old["gzs"]
    rows = [
        ("fixed protocol, unseen mIoU", f(new["fixed"]["miou_unseen"]), f(old["fixed"]["miou_unseen"]), ">= 30 (stretch 40)",
         new["targets"]["fixed_unseen_miou>=30"]),
        ("same, unseen names shuffled (control)", f(new["fixed_shuffled_text"]["miou_unseen"]),
         f(old["fixed_shuffled_text"]["miou_unseen"]), "<= fixed / 3", new["targets"]["shuffled_control<=fixed/3"]),
        ("gzs, calibrated: seen / unseen mIoU / hIoU",
         f"{f(gc.get('miou_seen'))} / {f(gc.get('miou_unseen'))} / {f(gc.get('hiou'))}",
         "-", "seen >= 60, hIoU >= 20", new["targets"]["gzs_seen_miou>=60"] and new["targets"]["gzs_hiou>=20"]),
        ("gzs, uncalibrated: seen / unseen mIoU / hIoU", f"{f(g['miou_seen'])} / {f(g['miou_unseen'])} / {f(g['hiou'])}",
         f"{f(og['miou_seen'])} / {f(og['miou_unseen'])} / {f(og['hiou'])}", "-", None),
        ("episode (['other', class]): unseen mIoU / FB-IoU",
         f"{f(new['episode']['miou_unseen'])} / {f(new['episode']['fbiou_unseen'])}",
         f"{f(old['episode']['miou_unseen'])} / {f(old['episode']['fbiou_unseen'])}", "FB-IoU >= 75",
         new["targets"]["episode_unseen_fbiou>=75"]),
        ("episode, shuffled names: unseen mIoU / FB-IoU",
         f"{f(new['episode_shuffled_text']['miou_unseen'])} / {f(new['episode_shuffled_text']['fbiou_unseen'])}",
         f"{f(old['episode_shuffled_text']['miou_unseen'])} / {f(old['episode_shuffled_text']['fbiou_unseen'])}", "-", None),
    ]
    for style, r in new.get("styles", {}).items():
        rows.append((f"re-styled scenes ({style}): fixed unseen mIoU / gzs seen mIoU",
                     f"{f(r['fixed_miou_unseen'])} / {f(r['gzs_miou_seen'])}", "-", "hold up", None))
    rows.append(("inference per 256x256 image (median, 2-core CPU)", f"{new['inference_s_per_image_median']:.3f} s",
                 f"{old['inference_s_per_image_median']:.3f} s", "<= 0.15 s", new["targets"]["inference<=0.15s"]))
    lines = ["| | new default (Lite0, ImageNet init) | previous default (v1, from scratch) | target |", "|---|---|---|---|"]
    for name, a, b, target, ok in rows:
        verdict = "" if ok is None else (": met" if ok else ": **missed**")
        lines.append(f"| {name} | {a} | {b} | {target}{verdict if target != '-' else ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
