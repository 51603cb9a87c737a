"""``zeroseg demo``: a local gradio web app over the public API (semantic and instance tabs).

    zeroseg demo --port 7860            # then open http://127.0.0.1:7860

gradio is an optional dependency (``pip install 'zeroseg[demo]'``), imported only when the app
is built, so this module and ``zeroseg --help`` work without it. Uploads come in as file paths
(``gr.File``), never decoded by gradio: ``zeroseg.io.load_image`` reads the pixel count off the
header first, so a corrupt or oversized upload becomes a message in the page, not a crash.
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import re
import shutil
import tempfile
import threading
import traceback
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ZerosegError
from .io import MAX_INPUT_PIXELS

if TYPE_CHECKING:
    import gradio as gr

    from .api import Segmenter
    from .instance_segmenter import InstanceSegmenter

INSTALL_HINT = "pip install 'zeroseg[demo]'"
# the labels `make demo` uses: the example scenes hold only classes the default model never saw
DEFAULT_LABELS = "tiger face,bus,violin,pear,castle,duck,other"
DEFAULT_INSTANCE_LABELS = "tiger face,bus,violin,pear,castle,duck"
# `zeroseg instances` defaults
SCORE_THRESHOLD, MAX_DETECTIONS, NMS_ACROSS_LABELS = 0.15, 20, 0.5
MAX_UPLOAD = "256mb"  # a 40-megapixel RGBA PNG fits; gradio refuses larger uploads before they land on disk
KEEP_RESULTS = 32  # request output folders kept on disk (gradio copies what it serves into its own cache)
OVERLAY_HEIGHT = 420  # px on the page; CSS scales small results up to it, so the legend stays readable
CSS = ("#seg-overlay img, #inst-overlay img {width: 100%; height: 100%; object-fit: contain; "
       "padding: 36px 8px 8px; box-sizing: border-box;}")  # clear of the component's label and buttons
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "images"  # present in a source checkout


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``zeroseg demo`` options (no gradio needed to parse them)."""
    p.add_argument("--model", default="default", help="semantic model: a registered name, .ckpt or .safetensors")
    p.add_argument("--instances-model", default="default-instances",
                   help="instance model: default-instances (bundled) or a zeroseg instance .safetensors")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    p.add_argument("--port", type=_int_in(1, 65535), default=7860, help="default 7860")
    p.add_argument("--max-pixels", type=_int_in(1, 2**62), default=MAX_INPUT_PIXELS,
                   help=f"refuse uploaded images with more pixels, read from the header before decoding "
                        f"(default {MAX_INPUT_PIXELS}, i.e. 40 megapixels)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {v}")
        return v
    return parse


def import_gradio():
    """gradio, with analytics off; a missing install is one ZerosegError line (exit code 2)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read by gradio at import and in Blocks()
    try:
        import gradio  # startup
    except ImportError:
        raise ZerosegError(f"the web demo needs gradio, an optional dependency: {INSTALL_HINT}") from None
    return gradio


class Models:
    """The demo's models: each loaded once, on first use, then kept for the process.

    Reusing the same objects keeps their ``CachedTextEncoder``: a label is embedded once, whatever
    the number of requests. A prompt template set gets a shallow copy of the segmenter (same
    network, own text cache), at most ``max_template_sets`` of them.
    """

    def __init__(self, semantic: str | Callable[[], Segmenter] = "default",
                 instances: str | Callable[[], InstanceSegmenter] = "default-instances",
                 device: str = "cpu", max_template_sets: int = 8):
        self.semantic_source, self.instances_source, self.device = semantic, instances, device
        self._semantic: Segmenter | None = None
        self._instances: InstanceSegmenter | None = None
        self._templated: collections.OrderedDict[tuple[str, ...], Segmenter] = collections.OrderedDict()
        self._max_template_sets = max_template_sets
        self._lock = threading.Lock()  # the semantic and instance tabs may run at the same time

    def _loaded(self, slot: str, source, load_name: Callable[[str], Any]):
        """The model in ``slot``, loaded on first use from ``source`` (a name/path or a factory)."""
        if getattr(self, slot) is None:
            setattr(self, slot, source() if callable(source) else load_name(source))
        return getattr(self, slot)

    def semantic(self, templates: tuple[str, ...] = ()) -> Segmenter:
        from .api import load_model  # startup

        with self._lock:
            self._loaded("_semantic", self.semantic_source, lambda s: load_model(s, device=self.device))
            if not templates:
                return self._semantic
            if templates not in self._templated:
                self._templated[templates] = self._with_templates(self._semantic, templates)
                while len(self._templated) > self._max_template_sets:
                    self._templated.popitem(last=False)
            self._templated.move_to_end(templates)
            return self._templated[templates]

    @staticmethod
    def _with_templates(base: Segmenter, templates: tuple[str, ...]) -> Segmenter:
        from .text.base import CachedTextEncoder  # startup

        # copies, not base.set_templates(): the shared segmenter keeps its own templates and cache
        inner = copy.copy(base.text_encoder.inner)
        inner.templates = inner.checked_templates(list(templates))
        view = copy.copy(base)
        view.text_encoder = CachedTextEncoder(inner)
        return view

    def instances(self) -> InstanceSegmenter:
        from .instance_segmenter import load_instance_model  # startup

        with self._lock:
            return self._loaded("_instances", self.instances_source,
                                lambda s: load_instance_model(s, device=self.device))


class _Results:
    """Per-request output folders under one temporary root; only the newest ``keep`` stay."""

    def __init__(self, keep: int = KEEP_RESULTS):
        self.root = Path(tempfile.mkdtemp(prefix="zeroseg-demo-"))
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)  # also at interpreter exit
        self._dirs: collections.deque[Path] = collections.deque()
        self._keep = keep
        self._lock = threading.Lock()

    def new_dir(self) -> Path:
        with self._lock:
            d = Path(tempfile.mkdtemp(dir=self.root))
            self._dirs.append(d)
            while len(self._dirs) > self._keep:
                shutil.rmtree(self._dirs.popleft(), ignore_errors=True)
            return d


def _stem(path: str) -> str:
    """A safe output name from the uploaded file's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:64].strip("._") or "image"


def _message(e: BaseException, path: str | None) -> str:
    """The error line for the page: the upload's name instead of the server's temp path."""
    text = str(e)
    if path:
        text = text.replace(str(path), Path(path).name)
    # the command-line flags these messages name: the demo's own limit, and the page's short side field
    return (text.replace("(--max-input-pixels)", "(zeroseg demo --max-pixels)")
            .replace("(max_pixels / --max-pixels); lower --short-side", "megapixels after resizing; lower the short side"))


def _error(e: BaseException, path: str | None) -> str:
    if isinstance(e, ZerosegError):
        return f"**Error:** {_message(e, path)}"
    traceback.print_exc()  # unexpected: the server log keeps the traceback, the page a short line
    return f"**Error:** internal error ({type(e).__name__}: {_message(e, path)}); see the server log"


def _read_input(path: str | None, labels_text: str, max_pixels: int):
    """Labels checked first (cheap), then the image: (uint8 [H, W, 3], labels)."""
    from .io import check_label_count, load_image, parse_labels  # startup

    labels = parse_labels(labels_text or "")
    check_label_count(labels)
    if not path:
        raise ZerosegError("upload an image first (or pick one of the examples)")
    return load_image(path, max_pixels=max_pixels, upright=True), labels


class DemoHandlers:
    """What the buttons run: plain functions of the inputs, so they work without a browser too."""

    def __init__(self, models: Models, max_pixels: int = MAX_INPUT_PIXELS):
        self.models, self.max_pixels, self.results = models, max_pixels, _Results()

    def segment(self, path: str | None, labels_text: str, short_side: float | None, multiscale: bool,
                flip: bool, spectral: bool, templates_text: str):
        """-> (overlay path, {label: fraction}, [downloads], status markdown)."""
        from .viz import write_segmentation  # startup

        try:
            image, labels = _read_input(path, labels_text, self.max_pixels)
            templates = tuple(t.strip() for t in (templates_text or "").splitlines() if t.strip())
            segmenter = self.models.semantic(templates)
            from .api import MULTISCALE  # startup: torch, loaded with the model by now

            options: dict[str, Any] = dict(scales=MULTISCALE if multiscale else (1.0,), flip=bool(flip))
            if short_side is not None:
                if short_side != int(short_side):
                    raise ZerosegError(f"short side must be a whole number of pixels, got {short_side:g}")
                options["short_side"] = int(short_side)
            if spectral:
                options.update(refine="spectral", refine_options={"method": "select", "features": "decoder"})
            seg = segmenter.segment(image, labels, **options)
            written = write_segmentation(seg, image, self.results.new_dir(), _stem(path),
                                         extra={"image": Path(path).name, "model": segmenter.source})
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the server stays up
            return None, None, None, _error(e, path)
        fractions = seg.fractions()
        top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(fractions.items(), key=lambda kv: -kv[1])
                        if v >= 0.005)
        status = (f"**Done:** {Path(path).name} ({image.shape[1]}x{image.shape[0]}) in {seg.seconds:.2f} s: "
                  f"{top or 'nothing'}")
        return written["overlay"], fractions, [written["mask"], written["json"]], status

    def detect(self, path: str | None, labels_text: str, score_threshold: float, max_detections: float):
        """-> (overlay path, detections markdown, [downloads], status markdown)."""
        from .viz import write_instances  # startup

        try:
            image, labels = _read_input(path, labels_text, self.max_pixels)
            segmenter = self.models.instances()
            found = segmenter.detect(image, labels, score_threshold=float(score_threshold),
                                     max_detections=max(1, int(max_detections)),
                                     nms_across_labels=NMS_ACROSS_LABELS)
            written = write_instances(found, image, self.results.new_dir(), _stem(path),
                                      extra={"image": Path(path).name, "model": segmenter.source})
        except Exception as e:  # noqa: BLE001
            return None, "", None, _error(e, path)
        rows = [f"| {k + 1} | {name} | {score:.2f} | {', '.join(f'{v:.0f}' for v in box)} |"
                for k, (name, score, box) in enumerate(zip(found.names(), found.scores, found.boxes))]
        table = "\n".join(["| # | label | score | box (x1, y1, x2, y2) |", "|---|---|---|---|", *rows]) if rows \
            else f"No detection scored {score_threshold:.2f} or more."
        status = (f"**Done:** {Path(path).name} ({image.shape[1]}x{image.shape[0]}) in {found.seconds:.2f} s: "
                  f"{len(found)} instance(s)")
        return written["overlay"], table, [written["json"], written["overlay"]], status


def _image_and_labels(gr, prefix: str, labels: str) -> tuple:
    """A tab's inputs: the upload (a file path: our loader checks it) and the label names."""
    return (gr.File(label="image (PNG, JPEG, ...)", type="filepath", elem_id=f"{prefix}-image"),
            gr.Textbox(value=labels, label="labels (comma separated)", elem_id=f"{prefix}-labels"))


def _examples(gr, examples: list[Path], image, labels_box, labels: str) -> None:
    if examples:
        gr.Examples([[str(p), labels] for p in examples], [image, labels_box], cache_examples=False,
                    example_labels=[p.stem for p in examples], label="example images")


def _status_and_overlay(gr, prefix: str, button: str, overlay_label: str) -> tuple:
    """A tab's status line (results and error messages) and its result image."""
    return (gr.Markdown(f"Upload an image, name the labels, press **{button}**.", elem_id=f"{prefix}-status"),
            gr.Image(label=overlay_label, type="filepath", interactive=False, height=OVERLAY_HEIGHT,
                     elem_id=f"{prefix}-overlay"))


def build_app(models: Models | None = None, *, max_pixels: int = MAX_INPUT_PIXELS,
              examples: list[Path] | None = None) -> gr.Blocks:
    """The two-tab gradio app (not launched; see ``launch``). ``examples``: image files offered
    as examples (default: ``examples/images`` of a source checkout, if present)."""
    gr = import_gradio()
    models = models or Models()
    handlers = DemoHandlers(models, max_pixels)
    if examples is None:
        examples = sorted(EXAMPLES_DIR.glob("*.png")) if EXAMPLES_DIR.is_dir() else []
    names = [src if isinstance(src, str) else "custom" for src in (models.semantic_source, models.instances_source)]

    with gr.Blocks(title="zeroseg demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# zeroseg: zero-shot segmentation driven by language\n"
                    "Name the classes in words; the models label pixels and instances with them, including "
                    f"classes they never saw in training. Models: `{names[0]}` (semantic), `{names[1]}` (instances), "
                    "loaded on the first request.")
        with gr.Tab("Semantic segmentation", id="semantic"):
            with gr.Row():
                with gr.Column(scale=2):
                    seg_file, seg_labels = _image_and_labels(gr, "seg", DEFAULT_LABELS)
                    with gr.Accordion("options", open=False):
                        short_side = gr.Number(value=None, precision=0, elem_id="seg-short-side",
                                               label="short side in pixels (empty: the model's own; 0: the image's)")
                        multiscale = gr.Checkbox(label="multi-scale (0.75-1.75, slower)", elem_id="seg-multiscale")
                        flip = gr.Checkbox(label="flip (also average the mirrored image)", elem_id="seg-flip")
                        spectral = gr.Checkbox(label="spectral refinement (SAZS eigen-segments)",
                                               elem_id="seg-spectral")
                        templates = gr.Textbox(label="prompt templates, one per line (empty: the model's own)",
                                               placeholder="a photo of a {}", lines=1, elem_id="seg-template")
                    seg_run = gr.Button("Segment", variant="primary", elem_id="seg-run")
                    _examples(gr, examples, seg_file, seg_labels, DEFAULT_LABELS)
                with gr.Column(scale=3):
                    seg_status, seg_overlay = _status_and_overlay(gr, "seg", "Segment", "overlay (legend: share of pixels)")
                    seg_fractions = gr.Label(label="share of pixels per label", show_heading=False,
                                             elem_id="seg-fractions")
                    seg_files = gr.File(label="downloads: label map (palette PNG, pixel = label index) and JSON",
                                        file_count="multiple", interactive=False, elem_id="seg-files")
            seg_run.click(handlers.segment, [seg_file, seg_labels, short_side, multiscale, flip, spectral, templates],
                          [seg_overlay, seg_fractions, seg_files, seg_status], api_name="segment")
        with gr.Tab("Instances (ZSI)", id="instances"):
            with gr.Row():
                with gr.Column(scale=2):
                    inst_file, inst_labels = _image_and_labels(gr, "inst", DEFAULT_INSTANCE_LABELS)
                    threshold = gr.Slider(0.0, 1.0, value=SCORE_THRESHOLD, step=0.01, label="score threshold",
                                          elem_id="inst-threshold")
                    max_det = gr.Slider(1, 100, value=MAX_DETECTIONS, step=1, label="at most this many instances",
                                        elem_id="inst-max")
                    inst_run = gr.Button("Detect", variant="primary", elem_id="inst-run")
                    _examples(gr, examples, inst_file, inst_labels, DEFAULT_INSTANCE_LABELS)
                with gr.Column(scale=3):
                    inst_status, inst_overlay = _status_and_overlay(gr, "inst", "Detect", "instances: masks, boxes, scores")
                    inst_table = gr.Markdown(elem_id="inst-table")
                    inst_files = gr.File(label="downloads: COCO JSON (boxes, RLE masks, scores) and overlay",
                                         file_count="multiple", interactive=False, elem_id="inst-files")
            inst_run.click(handlers.detect, [inst_file, inst_labels, threshold, max_det],
                           [inst_overlay, inst_table, inst_files, inst_status], api_name="instances")
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True,
           quiet: bool = False) -> None:
    """Serve ``app`` (never a share link); ``block=False`` returns once the server is up."""
    app.queue(default_concurrency_limit=1)  # one request per tab at a time: CPU inference, shared models
    try:
        app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                   quiet=quiet, ssr_mode=False, max_file_size=MAX_UPLOAD, show_error=True, css=CSS)
    except OSError as e:  # e.g. the port is taken
        raise ZerosegError(f"cannot serve on {host}:{port}: {e}") from None


def main(args: argparse.Namespace) -> int:
    """``zeroseg demo``: build the app and serve it until interrupted."""
    import_gradio()  # before any model work: a missing gradio is the first thing to hear about
    app = build_app(Models(args.model, args.instances_model, device=args.device), max_pixels=args.max_pixels)
    launch(app, args.host, args.port)
    return 0
