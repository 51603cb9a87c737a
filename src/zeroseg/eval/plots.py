"""Evaluation figures: a per-class IoU bar chart and image | ground truth | prediction grids.

matplotlib is imported lazily (it is slow to import and only the eval command needs it) and
figures are drawn on explicit Agg canvases, so nothing depends on a display or on pyplot state.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..labels import IGNORE_INDEX
from ..viz import palette as viz_palette

SEEN_COLOUR = "#4C72B0"
UNSEEN_COLOUR = "#DD8452"
OTHER_COLOUR = "#9E9E9E"
IGNORE_RGB = np.array([0, 0, 0], dtype=np.uint8)  # ignored ground-truth pixels are drawn black


def palette(n: int) -> np.ndarray:
    """The colours shared with the rest of zeroseg (``zeroseg.viz.palette``): uint8 [n, 3]."""

    return viz_palette(n)


def _figure(width: float, height: float):
    import matplotlib  # optional

    if "matplotlib.pyplot" not in sys.modules:  # headless default; never override a user's pyplot backend
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional
    from matplotlib.figure import Figure  # optional

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def bar_chart_iou(per_class: Mapping[str, float | None], seen: set[str] | Sequence[str], path: str | Path,
                  title: str, unseen: set[str] | Sequence[str] | None = None) -> Path:
    """Bars of per-class IoU (in percent, None/NaN shown as "n/a"); seen and unseen classes coloured apart.

    Classes in neither ``seen`` nor ``unseen`` (e.g. "other") are grey; when ``unseen`` is None
    every class not in ``seen`` counts as unseen except "other".
    """
    from matplotlib.patches import Patch  # optional

    seen = set(seen)
    names = list(per_class)

    def kind(name: str) -> str:
        if name in seen:
            return "seen"
        if (unseen is not None and name in set(unseen)) or (unseen is None and name != "other"):
            return "unseen"
        return "other"

    colours = {"seen": SEEN_COLOUR, "unseen": UNSEEN_COLOUR, "other": OTHER_COLOUR}
    values = [per_class[n] for n in names]
    heights = [0.0 if v is None or math.isnan(v) else float(v) for v in values]
    fig = _figure(max(5.0, 0.45 * len(names) + 2.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(names))
    ax.bar(xs, heights, color=[colours[kind(n)] for n in names], edgecolor="black", linewidth=0.5)
    for x, v in zip(xs, values):
        text = "n/a" if v is None or math.isnan(v) else f"{v:.0f}"
        ax.text(x, (0.0 if text == "n/a" else v) + 1.5, text, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    for tick, n in zip(ax.get_xticklabels(), names):  # a 0-height bar still shows its group
        if kind(n) != "other":
            tick.set_color(colours[kind(n)])
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 110)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    used = [k for k in ("seen", "unseen", "other") if any(kind(n) == k for n in names)]
    ax.legend(handles=[Patch(facecolor=colours[k], edgecolor="black", label=k) for k in used],
              loc="upper right", fontsize=8)
    return _save(fig, path)


@dataclass
class QualitativeSample:
    """One row of the qualitative grid; label maps hold global class ids (``ignore_index`` allowed)."""

    image: np.ndarray        # uint8 [H, W, 3]
    target: np.ndarray       # [H, W]
    prediction: np.ndarray   # [H, W]
    title: str = ""


def colourize(image: np.ndarray, label_map: np.ndarray, colours: np.ndarray, ignore_index: int = IGNORE_INDEX,
              alpha: float = 0.6) -> np.ndarray:
    """The image blended with each pixel's class colour; ignored pixels are painted ``IGNORE_RGB``."""
    ignore = label_map == ignore_index
    safe = np.where(ignore, 0, label_map)
    blend = image.astype(np.float32) * (1 - alpha) + colours[safe].astype(np.float32) * alpha
    blend[ignore] = IGNORE_RGB
    return blend.clip(0, 255).astype(np.uint8)


def qualitative_grid(samples: Sequence[QualitativeSample], class_names: Sequence[str], path: str | Path,
                     title: str = "", ignore_index: int = IGNORE_INDEX) -> Path:
    """A grid with one row per sample: image | ground truth | prediction, each row with its legend."""
    from matplotlib.patches import Patch  # optional

    if not samples:
        raise ValueError("no samples to draw")
    colours = palette(len(class_names))
    fig = _figure(11.0, 3.2 * len(samples) + (0.4 if title else 0.0))
    for row, s in enumerate(samples):
        panels = [("image", s.image),
                  ("ground truth", colourize(s.image, s.target, colours, ignore_index)),
                  ("prediction", colourize(s.image, s.prediction, colours, ignore_index))]
        for col, (name, picture) in enumerate(panels):
            ax = fig.add_subplot(len(samples), 3, row * 3 + col + 1)
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{s.title} - {name}" if (col == 0 and s.title) else name, fontsize=8)
        present = sorted({int(v) for v in np.unique(s.target)} | {int(v) for v in np.unique(s.prediction)})
        handles = [Patch(facecolor=colours[c] / 255.0, edgecolor="black", label=class_names[c])
                   for c in present if c != ignore_index]
        if ignore_index in present:
            handles.append(Patch(facecolor=IGNORE_RGB / 255.0, edgecolor="black", label="ignored"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
