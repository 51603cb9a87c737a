"""The README's demo figure: the four overlays `make demo` writes, tiled 2 x 2.

    make demo && .venv/bin/python examples/make_demo_figure.py [demo_out] [docs/demo_overlays.png]
    .venv/bin/python examples/make_demo_figure.py demo_out/instances docs/demo_instances.png "*_instances.png"
"""
import io
import sys
from pathlib import Path

from PIL import Image

from zeroseg.io import write_bytes_atomic


def tile(paths: list[Path], columns: int = 2) -> Image.Image:
    images = [Image.open(p).convert("RGB") for p in paths]
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * w, (i // columns) * h))
    return sheet


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/demo_overlays.png")
    pattern = sys.argv[3] if len(sys.argv) > 3 else "*_overlay.png"
    paths = sorted(src.glob(pattern))
    if not paths:
        sys.exit(f"no {pattern} in {src}: run `make demo` first")
    buf = io.BytesIO()
    tile(paths).save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    print(f"wrote {out} ({len(paths)} overlays)")


if __name__ == "__main__":
    main()
