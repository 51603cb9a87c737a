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


COLUMNS = (  # results file, column heading
    ("default_model", "default (Lite0, 12 epochs + 1 with the extra vocabulary, relay top-10, hubness 0.5)"),
    ("default_model_session12", "the same network without the hubness correction (session 12)"),
    ("default_model_stage2_relay141", "previous default (Lite0, 12 epochs, relay all 141)"),
    ("default_model_lite0_8ep", "Lite0, 8 epochs, direct"),
    ("default_model_from_scratch_v1", "first default (v1, from scratch)"),
)


def pair(r: dict, protocol: str, a: str, b: str) -> str:
    return f"{f(r[protocol][a])} / {f(r[protocol][b])}" if protocol in r else "-"


def triple(r: dict, protocol: str) -> str:
    if protocol not in r:
        return "-"
    g = r[protocol]
    return f"{f(g['miou_seen'])} / {f(g['miou_unseen'])} / {f(g['hiou'])}"


def table() -> str:
    runs = [load(name) for name, _ in COLUMNS]
    new = runs[0]
    t = new["targets"]
    rows = [
        ("fixed protocol, unseen mIoU", [f(r["fixed"]["miou_unseen"]) for r in runs], ">= 30 (stretch 40)",
         t["fixed_unseen_miou>=30"]),
        ("same, unseen names shuffled (control)", [f(r["fixed_shuffled_text"]["miou_unseen"]) for r in runs],
         "<= fixed / 3", t["shuffled_control<=fixed/3"]),
        ("gzs, calibrated: seen / unseen mIoU / hIoU", [triple(r, "gzs_calibrated") for r in runs],
         "seen >= 60, hIoU >= 20", t["gzs_seen_miou>=60"] and t["gzs_hiou>=20"]),
        ("gzs, uncalibrated: seen / unseen mIoU / hIoU", [triple(r, "gzs") for r in runs], "-", None),
        ("episode (['other', class]): unseen mIoU / FB-IoU",
         [pair(r, "episode", "miou_unseen", "fbiou_unseen") for r in runs], "FB-IoU >= 75", t["episode_unseen_fbiou>=75"]),
        ("episode, shuffled names: unseen mIoU / FB-IoU",
         [pair(r, "episode_shuffled_text", "miou_unseen", "fbiou_unseen") for r in runs], "-", None),
    ]
    for style in dict.fromkeys(k for r in runs for k in r.get("styles", {})):  # "-" where a run has none
        rows.append((f"re-styled scenes ({style}): fixed unseen mIoU / gzs seen mIoU",
                     [(f"{f(r['styles'][style]['fixed_miou_unseen'])} / {f(r['styles'][style]['gzs_miou_seen'])}"
                       if style in r.get("styles", {}) else "-") for r in runs], "hold up", None))
    rows.append(("inference per 256x256 image (median, 2-core CPU)",
                 [f"{r['inference_s_per_image_median']:.3f} s" for r in runs], "<= 0.15 s", t["inference<=0.15s"]))
    lines = ["| | " + " | ".join(h for _, h in COLUMNS) + " | target |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, cells, target, ok in rows:
        verdict = "" if ok is None else (": met" if ok else ": **missed**")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target}{verdict if target != '-' else ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
