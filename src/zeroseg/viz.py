"""Pictures of results: a fixed palette, palette PNGs of label maps, overlays with a legend."""
from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import encode_image, sha256_hex, write_bytes_atomic

# Hand-picked distinct colours first; more are spread around the hue circle.
_BASE = [
    (64, 64, 64), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
    (255, 215, 180), (0, 0, 128),
]


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours, uint8 [n, 3]; the same index always gets the same colour."""
    colours = list(_BASE[:n])
    golden = 0.618033988749895
    for i in range(len(colours), n):
        h = (i * golden) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 + 0.35 * ((i // 7) % 2), 0.95 - 0.3 * ((i // 3) % 2))
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def label_png(label_map: np.ndarray, num_labels: int) -> Image.Image:
    """A palette ("P" mode) PNG whose pixel values are the label indices."""
    if num_labels > 256:
        raise ValueError("a palette PNG holds at most 256 labels")
    img = Image.fromarray(label_map.astype(np.uint8), mode="P")
    img.putpalette(palette(max(num_labels, 1)).ravel().tolist())
    return img


# A system sans-serif when there is one (Pillow's small built-in font squeezes spaces away:
# "tiger face" read as "tigerface"), else Pillow's default.
SYSTEM_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/Library/Fonts/Arial.ttf", "C:/Windows/Fonts/arial.ttf")


def _font(size: int) -> ImageFont.ImageFont:
    for path in SYSTEM_FONTS:
        try:
            return ImageFont.truetype(path, size=size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay(image: np.ndarray, label_map: np.ndarray, labels: list[str], alpha: float = 0.5,
            fractions: dict[str, float] | None = None) -> Image.Image:
    """The image blended with label colours, and a legend naming each label present."""
    colours = palette(len(labels))
    blend = (image.astype(np.float32) * (1 - alpha) + colours[label_map].astype(np.float32) * alpha)
    canvas = Image.fromarray(blend.clip(0, 255).astype(np.uint8))
    present = [i for i in range(len(labels)) if (label_map == i).any()] or list(range(len(labels)))
    h, w = label_map.shape
    size = max(11, min(22, w // 28))
    font = _font(size)
    row = size + 6
    draw = ImageDraw.Draw(canvas)
    texts = []
    for i in present:
        share = f"  {100 * fractions[labels[i]]:.0f}%" if fractions and labels[i] in fractions else ""
        texts.append(f"{labels[i]}{share}")
    text_w = max(draw.textlength(t, font=font) for t in texts)
    legend_w, legend_h = int(text_w + row + 14), row * len(present) + 8
    legend = Image.new("RGB", (legend_w, legend_h), (255, 255, 255))
    ld = ImageDraw.Draw(legend)
    for k, (i, t) in enumerate(zip(present, texts)):
        y = 4 + k * row
        ld.rectangle([6, y + 2, 6 + size, y + 2 + size], fill=tuple(int(c) for c in colours[i]), outline=(0, 0, 0))
        ld.text((12 + size, y + 1), t, fill=(0, 0, 0), font=font)
    # the legend goes to the right of the image, so it never hides the segmentation
    out = Image.new("RGB", (w + legend_w, max(h, legend_h)), (255, 255, 255))
    out.paste(canvas, (0, 0))
    out.paste(legend, (w, 0))
    return out


def _write_images(images: dict, paths: dict) -> dict:
    """Write each PIL image atomically; {key: {"name", "sha256"}} for the record (``--resume``
    checks these, so a file replaced by another run never passes for this one's)."""

    files = {}
    for key, image in images.items():
        data = encode_image(image, paths[key].suffix)
        write_bytes_atomic(paths[key], data)
        files[key] = {"name": paths[key].name, "sha256": sha256_hex(data)}
    return files


def write_segmentation(seg, image: np.ndarray, out_dir: str | Path, stem: str, extra: dict | None = None) -> dict:
    """Write ``<stem>.png`` (label indices), ``<stem>_overlay.png`` and ``<stem>.json``, each atomically.

    The JSON comes last and names the images with their SHA-256, so it exists only once the
    images are complete. It holds no timings: the same input gives the same bytes (timings are in
    the run's ``manifest.jsonl``).
    """

    out_dir = Path(out_dir)
    paths = {"mask": out_dir / f"{stem}.png", "overlay": out_dir / f"{stem}_overlay.png",
             "json": out_dir / f"{stem}.json"}
    fractions = seg.fractions()
    files = _write_images({"mask": label_png(seg.label_map, len(seg.labels)),
                           "overlay": overlay(image, seg.label_map, seg.labels, fractions=fractions)}, paths)
    record = {
        "labels": seg.labels,
        "image_size": {"height": int(seg.label_map.shape[0]), "width": int(seg.label_map.shape[1])},
        "pixel_fraction": {k: round(v, 6) for k, v in fractions.items()},
        **(extra or {}),
        "files": files,
    }
    write_bytes_atomic(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    return {k: str(v) for k, v in paths.items()}


def instance_overlay(image: np.ndarray, instances, alpha: float = 0.45) -> Image.Image:
    """Each instance's mask tinted in its own colour, its box outlined and tagged "label score"."""
    n = len(instances)
    colours = palette(n + 1)[1:]  # colour 0 is the dark grey used for "nothing"
    canvas = image.astype(np.float32).copy()
    for k in range(n - 1, -1, -1):  # best instance painted last, i.e. on top
        m = instances.masks[k]
        canvas[m] = canvas[m] * (1 - alpha) + colours[k].astype(np.float32) * alpha
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    size = max(10, min(18, image.shape[1] // 24))
    font = _font(size)
    names = instances.names()
    for k in range(n):
        colour = tuple(int(c) for c in colours[k])
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[k])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        tag = f"{names[k]} {instances.scores[k]:.2f}"
        tw = draw.textlength(tag, font=font)
        ty = max(0.0, y1 - size - 4)
        draw.rectangle([x1, ty, x1 + tw + 6, ty + size + 4], fill=colour)
        light = sum(colour) > 380
        draw.text((x1 + 3, ty + 1), tag, fill=(0, 0, 0) if light else (255, 255, 255), font=font)
    return out


def write_instances(instances, image: np.ndarray, out_dir: str | Path, stem: str, image_id: int = 1,
                    extra: dict | None = None) -> dict:
    """Write ``<stem>_instances.png`` and then ``<stem>_instances.json`` (COCO results + categories,
    the overlay's SHA-256; no timings), each atomically."""

    out_dir = Path(out_dir)
    paths = {"json": out_dir / f"{stem}_instances.json", "overlay": out_dir / f"{stem}_instances.png"}
    files = _write_images({"overlay": instance_overlay(image, instances)}, paths)
    record = {
        "image_size": {"height": int(image.shape[0]), "width": int(image.shape[1])},
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(instances.labels)],
        "detections": instances.to_coco(image_id),
        **(extra or {}),
        "files": files,
    }
    write_bytes_atomic(paths["json"], (json.dumps(record) + "\n").encode())
    return {k: str(v) for k, v in paths.items()}
