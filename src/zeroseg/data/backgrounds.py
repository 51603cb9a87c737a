"""Procedural backgrounds of the synthetic benchmark's scenes: gradients, noise, stripes, clutter
(float32 [size, size, 3] in 0..255, drawn from the scene's own random generator)."""
from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["render_background"]


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    return yy, xx


def _color(rng: np.random.Generator) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.9), rng.uniform(0.15, 1.0))
    return np.array(rgb, np.float32) * 255.0


def _mix(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    return c1 + (c2 - c1) * t[..., None]


def _bg_linear(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    theta = float(rng.uniform(0, 2 * math.pi))  # Python floats keep the arrays float32
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return _mix(t, _color(rng), _color(rng))


def _bg_radial(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    cy, cx = (float(v) for v in rng.uniform(-0.2, 1.2, 2))
    t = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / float(rng.uniform(0.6, 1.5))
    return _mix(np.clip(t, 0, 1), _color(rng), _color(rng))


def _bg_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    # Smooth colour noise: two octaves of random low-resolution images upsampled bicubically.
    out = np.zeros((size, size, 3), np.float32)
    k = int(rng.integers(2, 7))
    for cells, weight in ((k, 0.75), (4 * k, 0.25)):
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        out += weight * np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC),
                                   np.float32)
    return out


def _bg_stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    theta = float(rng.uniform(0, math.pi))
    freq, phase = math.tau * float(rng.uniform(2, 14)), math.tau * float(rng.random())
    wave = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    if rng.random() < 0.3:  # checkerboard: product of two perpendicular waves
        freq = math.tau * float(rng.uniform(2, 14))
        wave = wave * np.sin(freq * (xx * math.sin(theta) - yy * math.cos(theta)))
    t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    return _mix(t, _color(rng), _color(rng))


def _bg_clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    # Blurred random shapes (never emoji), so the model cannot treat "any edge" as an object.
    base = _bg_linear(rng, size) if rng.random() < 0.5 else np.broadcast_to(_color(rng), (size, size, 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(8, 40))):
        fill = tuple(int(v) for v in _color(rng))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.03, 0.4, 2) * size
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        elif kind == 2:
            pts = rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * (w, h) + (x0, y0)
            draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=fill, width=int(rng.integers(1, max(2, size // 24))))
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 4.0)) * size / 256))
    return np.asarray(im, np.float32)


_BACKGROUNDS = (_bg_linear, _bg_radial, _bg_noise, _bg_stripes, _bg_clutter)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural background: float32 [size, size, 3] in 0..255 (gradients, noise, stripes, clutter)."""
    bg = _BACKGROUNDS[int(rng.integers(0, len(_BACKGROUNDS)))](rng, size)
    if rng.random() < 0.3:  # sensor-like grain on some images
        bg = bg + rng.standard_normal((size, size, 3), dtype=np.float32) * float(rng.uniform(2, 8))
    return np.asarray(bg, np.float32)
