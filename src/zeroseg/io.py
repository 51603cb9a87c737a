"""File input and output: images in, atomic writes out."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import ZerosegError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Largest image decoded (pixels, read from the header before decoding): 40 megapixels.
MAX_INPUT_PIXELS = 40_000_000


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_image_atomic(image, path: str | Path, **kwargs) -> None:
    """Save a PIL image; the format comes from ``path``'s suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=_format_for(path), **kwargs)


def encode_image(image, suffix: str = ".png", **kwargs) -> bytes:
    """A PIL image as file bytes (format from ``suffix``): hashed and written in one step."""

    buffer = io.BytesIO()
    image.save(buffer, format=_format_for(Path(f"x{suffix}")), **kwargs)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _format_for(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")


def load_image(path: str | Path, max_pixels: int | None = MAX_INPUT_PIXELS, upright: bool = False) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]; a missing, corrupt, unsupported or too large file
    (more than ``max_pixels``, read off the header before decoding; None: no limit) is a
    ZerosegError. ``upright``: apply the EXIF orientation (a phone's rotated JPEG comes out as
    it is shown); datasets keep the stored pixel layout, which their masks are drawn on."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # heavy

    path = Path(path)
    if not path.exists():
        raise ZerosegError(f"image not found: {path}")
    if path.is_dir():
        raise ZerosegError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ZerosegError(f"image {path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                   f"{max_pixels / 1e6:g} (--max-input-pixels)")
            if w < 1 or h < 1:
                raise ZerosegError(f"image {path} is empty ({w}x{h})")
            im.load()
            if upright:
                im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ZerosegError(f"not an image or unsupported format: {path}") from None
    except Image.DecompressionBombError as e:
        raise ZerosegError(f"image {path} refused as a possible decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ZerosegError(f"corrupt image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given; directories expanded to their image files (sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise ZerosegError(f"no images in directory {p}")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ZerosegError(f"image not found: {p}")
    return out


def ensure_writable_dir(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".zeroseg-write-test."):
            pass
    except OSError as e:
        raise ZerosegError(f"cannot write to output directory {path}: {e.strerror or e}") from None
    return path


def parse_labels(text: str | list[str]) -> list[str]:
    """'dog, grass,other' -> ['dog', 'grass', 'other']; empty or duplicate labels are errors."""
    labels = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if not labels or all(not s for s in labels):
        raise ZerosegError("empty label set: give at least one label, e.g. --labels 'dog,grass,other'")
    if any(not s for s in labels):
        raise ZerosegError(f"empty label in {text!r}")
    seen: set[str] = set()
    dups = [s for s in labels if s.lower() in seen or seen.add(s.lower())]
    if dups:
        raise ZerosegError(f"duplicate label(s): {', '.join(dict.fromkeys(dups))}")
    return labels


def output_stems(paths: list[Path]) -> list[str]:
    """A distinct output name per input, in input order, whatever the file names.

    The stem (``a`` for ``a.png``) when no other input shares it; otherwise the name with its
    extension (``a.png`` -> ``a.png``, ``a.jpg`` -> ``a.jpg``); if that still collides (the same
    name in two folders, or a real file named ``a.png.png``), ``~2``, ``~3``... are appended in
    input order. So ``a.jpg``, ``a.png`` and ``a_1.png`` give ``a.jpg``, ``a.png`` and ``a_1``:
    no output ever overwrites another input's.
    """

    stems = Counter(p.stem.lower() for p in paths)
    names: list[str] = []
    taken: set[str] = set()
    wanted = [p.stem if stems[p.stem.lower()] == 1 else p.name for p in paths]
    reserved = Counter(w.lower() for w in wanted)
    for w in wanted:
        name, k = w, 1
        while name.lower() in taken or (name != w and name.lower() in reserved):
            k += 1
            name = f"{w}~{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def check_label_count(labels: list[str], limit: int = 256) -> None:
    """The palette PNG label map indexes 8 bits: refuse more labels before any work is done."""
    if len(labels) > limit:
        raise ZerosegError(f"{len(labels)} labels given; at most {limit} fit the palette PNG label map")
