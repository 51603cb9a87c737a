"""The papers' published numbers (``published.json``, with sources) and how results on real
datasets are printed beside them (``zeroseg eval --dataset``, ``benchmarks/published_table.py``)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

__all__ = ["DATASET_NAMES", "METRIC_NAMES", "load_published", "published_for", "published_table_markdown",
           "format_real_summary"]


DATASET_NAMES = {"pascal5i": "PASCAL-5i", "coco20i": "COCO-20i", "fss1000": "FSS-1000", "ade20k": "ADE20K",
                 "coco_zsi_48_17": "COCO 48/17", "coco_zsi_65_15": "COCO 65/15"}


METRIC_NAMES = {"miou": "mIoU", "fbiou": "FB-IoU", "pixacc": "pixAcc", "map50": "mAP@0.5"}


def _metric_name(metric: str) -> str:
    """'miou' -> 'mIoU', 'seen_recall100@0.5' -> 'seen Recall@100 (IoU 0.5)' (display only)."""
    prefix, _, base = metric.rpartition("_") if metric.split("_")[0] in ("seen", "unseen", "hm") else ("", "", metric)
    if base.startswith("recall100@"):
        shown = f"Recall@100 (IoU {base.split('@', 1)[1]})"
    else:
        shown = METRIC_NAMES.get(base, base)
    prefix = "harmonic mean" if prefix == "hm" else prefix
    return f"{prefix} {shown}" if prefix else shown


def load_published() -> dict:
    """The published numbers shipped as ``zeroseg/eval/published.json`` (a fresh copy)."""
    text = resources.files("zeroseg.eval").joinpath("published.json").read_text(encoding="utf-8")
    return json.loads(text)


def published_for(dataset: str, fold: int | str | None, data: Mapping | None = None) -> list[dict]:
    """Published results for ``dataset`` and ``fold`` (an int, "mean", or None for a whole set),
    each with its source's title and address added."""
    data = load_published() if data is None else data
    out = []
    for entry in data["results"]:
        if entry["dataset"] != dataset or entry.get("fold") != fold:
            continue
        source = data["sources"][entry["source"]]
        out.append({**entry, "source_title": source["title"], "source_url": source["url"]})
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def published_table_markdown(data: Mapping | None = None) -> str:
    """The published numbers as Markdown (the README's table is this function's output).

    One row per (method, backbone, dataset, metric) with at least one verified value; the
    values left null in the data (not verified) are listed below the table.
    """
    data = load_published() if data is None else data
    rows: dict[tuple, dict] = {}
    missing: dict[tuple, list[str]] = {}
    for e in data["results"]:
        ds = DATASET_NAMES.get(e["dataset"], e["dataset"])
        metric = _metric_name(e["metric"])
        if e.get("setting"):
            metric = f"{e['setting'].upper()} {metric}"
        if e["value"] is None:
            fold = e.get("fold")
            where = f" fold {fold}" if isinstance(fold, int) else (" mean" if fold == "mean" else "")
            missing.setdefault((e["method"], e["backbone"], ds), []).append(f"{metric}{where}")
            continue
        key = (e["method"], e["backbone"], ds, metric)
        row = rows.setdefault(key, {"values": {}, "sources": []})
        column = e.get("fold")
        row["values"]["all" if column in (None, "mean") else int(column)] = e["value"]
        if e["source"] not in row["sources"]:
            row["sources"].append(e["source"])
    lines = ["| method | backbone | dataset | metric | fold 0 | fold 1 | fold 2 | fold 3 | mean / whole set | source |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, backbone, ds, metric), row in rows.items():
        cells = [_fmt(row["values"].get(k)) for k in (0, 1, 2, 3, "all")]
        links = ", ".join(f"[{s}]({data['sources'][s]['url']})" for s in row["sources"])
        lines.append(f"| {method} | {backbone} | {ds} | {metric} | " + " | ".join(cells) + f" | {links} |")
    if missing:
        lines += ["", "Not verified, so null in `published.json` (shown as n/a beside measurements):"]
        for (method, backbone, ds), what in missing.items():
            lines.append(f"- {method} {backbone}, {ds}: {', '.join(what)}")
    return "\n".join(lines) + "\n"


def _published_text(entries: Iterable[Mapping], metric: str) -> str:
    parts = [f"{e['method']} {e['backbone']}: {_fmt(e['value']) if e['value'] is not None else 'n/a'}"
             for e in entries if e["metric"] == metric]
    return "; ".join(parts) if parts else "-"


def format_real_summary(result: Mapping[str, Any]) -> str:
    """Measured metrics beside the published ones, one line per metric (per fold, then the mean)."""
    lines = []
    parts = result.get("folds") or [result]
    for part in parts:
        s = part.get("settings", {})
        fold = part.get("fold")
        where = DATASET_NAMES.get(part["dataset"], part["dataset"]) + (f" fold {fold}" if fold is not None else "")
        if part["protocol"] == "episodes":
            detail = f"{part['num_episodes']} episodes, rule {s.get('rule')}, {s.get('resize')} {s.get('short_side')}"
        else:
            detail = (f"{part['num_images']} images, scales {s.get('scales')}, flip {s.get('flip')}, "
                      f"window {s.get('window')}")
        lines.append(f"{where} ({part.get('split')}, {detail})")
        lines += _metric_lines(part)
    if "folds" in result:
        lines.append(f"{DATASET_NAMES.get(result['dataset'], result['dataset'])} mean over {len(parts)} folds")
        lines += _metric_lines(result)
    return "\n".join(lines)


def _metric_lines(part: Mapping[str, Any]) -> list[str]:
    lines = [f"  {'metric':<8} {'measured':>9}   published"]
    for metric, value in part["metrics"].items():
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"  {_metric_name(metric):<8} {shown:>9}   "
                     f"{_published_text(part.get('published', []), metric)}")
    return lines
