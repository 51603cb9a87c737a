"""File input and output: images in, atomic writes out."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ZerosegError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


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


def _format_for(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")


def load_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]; a missing, corrupt or unsupported file is a ZerosegError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ZerosegError(f"image not found: {path}")
    if path.is_dir():
        raise ZerosegError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ZerosegError(f"not an image or unsupported format: {path}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ZerosegError(f"corrupt image {path}: {e}") from None


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
