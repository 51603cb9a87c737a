"""`zeroseg demo`: the gradio app driven in a real headless browser (Debian's chromium via Playwright).

One app is served in-process (so the tests can look at the models it keeps) and one through the
`zeroseg demo` command (with a tiny --max-pixels). Playwright never downloads a browser: it
launches /usr/bin/chromium (`.ci/run` installs it).
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[test]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():  # CI installs it (.ci/run); locally: apt-get install -y chromium
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"
SCREENSHOT = ROOT / "docs" / "webdemo.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # Playwright adds --headless and a fresh profile
RESULT_TIMEOUT = 60_000  # ms: the first request loads the model
# gradio's own queue code under pandas 3 (not ours to fix)
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cli_server():
    """`zeroseg demo --max-pixels 1000` in a subprocess, started first so it boots while other tests run."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "zeroseg.cli", "demo", "--port", str(port), "--max-pixels", "1000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    yield proc, url
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the server closes and its temporary files go
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until_serving(proc: subprocess.Popen, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"zeroseg demo exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"zeroseg demo did not serve {url} within {timeout} s")


@pytest.fixture(scope="module")
def served(cli_server):
    """(url, Models) of an app served in this process with the bundled default models."""
    from zeroseg.webdemo import Models, build_app, launch

    models = Models("default", "default-instances")
    app = build_app(models)
    port = _free_port()
    launch(app, port=port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/", models
    app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.outside = []  # requests to anywhere but the local server: the page must not phone home
    pg.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
          else pg.outside.append(r.url))
    yield pg
    context.close()


def _upload(page, elem: str, path: Path) -> None:
    """Put ``path`` into the gr.File ``#elem`` (clearing a previous file) and wait for the upload."""
    clear = page.locator(f"#{elem} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator(f"#{elem} input[type=file]").set_input_files(str(path))
    expect(page.locator(f"#{elem} a[download='{path.name}']")).to_be_visible()


def _fill(page, elem: str, text: str) -> None:
    page.locator(f"#{elem} textarea").fill(text)


def _image_loaded(page, elem: str) -> bool:
    """The result image is shown and decoded (the status line can come first: wait for it)."""
    img = page.locator(f"#{elem} img")
    expect(img).to_be_visible(timeout=RESULT_TIMEOUT)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(),
                           timeout=RESULT_TIMEOUT)
    return img.evaluate("el => el.complete && el.naturalWidth > 0")


def _download(page, elem: str, suffix: str) -> bytes:
    link = page.locator(f"#{elem} a[download$='{suffix}']")
    expect(link).to_have_count(1)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    return response.body()


def _save_screenshot(page, tmp_path: Path) -> None:
    """The README's screenshot: taken on every run (and checked to be a real page image); it
    replaces docs/webdemo.png only with ZEROSEG_UPDATE_DOCS=1, so a test run leaves the tree clean."""
    from PIL import Image

    shot = tmp_path / "webdemo.png"
    page.screenshot(path=str(shot), type="png", full_page=True)
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("ZEROSEG_UPDATE_DOCS") == "1":
        tmp = SCREENSHOT.with_name(f".{SCREENSHOT.name}.{os.getpid()}.tmp")
        tmp.write_bytes(shot.read_bytes())
        os.replace(tmp, SCREENSHOT)  # a reader never sees half a PNG


def test_semantic_tab(served, page, tmp_path):
    from PIL import Image

    from zeroseg.webdemo import DEFAULT_LABELS

    url, models = served
    page.goto(url)
    # an example fills the image and the labels; the result carries them through
    page.locator("button", has_text="2_tiger-face_bus_castle").first.click()
    expect(page.locator("#seg-image a[download='2_tiger-face_bus_castle.png']")).to_be_visible()
    expect(page.locator("#seg-labels textarea")).to_have_value(DEFAULT_LABELS)
    page.click("#seg-run")
    status = page.locator("#seg-status")
    expect(status).to_contain_text("Done: 2_tiger-face_bus_castle.png (256x256)", timeout=RESULT_TIMEOUT)
    assert _image_loaded(page, "seg-overlay")
    labels = DEFAULT_LABELS.split(",")
    chart = page.locator("#seg-fractions")
    for label in labels:
        expect(chart).to_contain_text(label)
    record = json.loads(_download(page, "seg-files", ".json"))
    assert record["labels"] == labels
    assert abs(sum(record["pixel_fraction"].values()) - 1) < 1e-4
    top, share = max(record["pixel_fraction"].items(), key=lambda kv: kv[1])
    expect(status).to_contain_text(f"{top} {100 * share:.0f}%")  # the page and the download agree
    mask = Image.open(io.BytesIO(_download(page, "seg-files", "2_tiger-face_bus_castle.png")))
    assert mask.mode == "P" and mask.size == (256, 256)
    _save_screenshot(page, tmp_path)

    # a second request reuses the loaded model and its text cache: no label is embedded again
    segmenter = models.semantic()
    misses = segmenter.text_encoder.misses
    relayed = segmenter.relay_vocabulary if segmenter.relay_top_k else []  # the relay embeds the training names once
    assert misses == len(set(labels) | set(relayed))
    _upload(page, "seg-image", EXAMPLES / "4_pear.png")
    page.click("#seg-run")
    expect(status).to_contain_text("Done: 4_pear.png", timeout=RESULT_TIMEOUT)
    assert models.semantic() is segmenter and segmenter.text_encoder.misses == misses
    assert page.outside == []


def test_bad_input_shows_message_and_next_request_works(served, page, tmp_path):
    url, _ = served
    page.goto(url)
    status = page.locator("#seg-status")
    broken = tmp_path / "broken.png"
    broken.write_bytes((EXAMPLES / "4_pear.png").read_bytes()[:300])  # a PNG cut short
    _upload(page, "seg-image", broken)
    page.click("#seg-run")
    expect(status).to_contain_text("Error: corrupt image broken.png", timeout=RESULT_TIMEOUT)
    expect(status).not_to_contain_text("/tmp")  # the upload's name, not the server's path
    expect(page.locator("#seg-overlay img")).to_have_count(0)

    notes = tmp_path / "notes.png"
    notes.write_text("not an image at all\n")
    _upload(page, "seg-image", notes)
    page.click("#seg-run")
    expect(status).to_contain_text("Error: not an image or unsupported format: notes.png", timeout=RESULT_TIMEOUT)

    _upload(page, "seg-image", EXAMPLES / "1_tiger-face_duck.png")
    _fill(page, "seg-labels", "duck, tiger face, Duck")
    page.click("#seg-run")
    expect(status).to_contain_text("Error: duplicate label(s): Duck", timeout=RESULT_TIMEOUT)
    _fill(page, "seg-labels", " , ")
    page.click("#seg-run")
    expect(status).to_contain_text("Error: empty label set", timeout=RESULT_TIMEOUT)

    _fill(page, "seg-labels", "tiger face, duck, other")
    page.click("#seg-run")
    expect(status).to_contain_text("Done: 1_tiger-face_duck.png", timeout=RESULT_TIMEOUT)
    assert _image_loaded(page, "seg-overlay")
    expect(page.locator("#seg-fractions")).to_contain_text("tiger face")


def test_instances_tab(served, page):
    url, _ = served
    page.goto(url)
    page.get_by_role("tab", name="Instances (ZSI)").click()
    _upload(page, "inst-image", EXAMPLES / "1_tiger-face_duck.png")
    _fill(page, "inst-labels", "tiger face, duck, violin")
    page.locator("#inst-threshold input[type=number]").fill("0.1")
    page.click("#inst-run")
    status = page.locator("#inst-status")
    expect(status).to_contain_text("Done: 1_tiger-face_duck.png", timeout=RESULT_TIMEOUT)
    assert _image_loaded(page, "inst-overlay")
    record = json.loads(_download(page, "inst-files", "_instances.json"))
    assert [c["name"] for c in record["categories"]] == ["tiger face", "duck", "violin"]
    found = record["detections"]
    assert found and all(d["score"] >= 0.1 and "segmentation" in d and len(d["bbox"]) == 4 for d in found)
    expect(status).to_contain_text(f"{len(found)} instance(s)")
    table = page.locator("#inst-table")
    for d in found:
        expect(table).to_contain_text(record["categories"][d["category_id"] - 1]["name"])
    assert page.outside == []


def test_cli_demo_refuses_images_over_max_pixels(cli_server, page):
    proc, url = cli_server
    _wait_until_serving(proc, url)
    page.goto(url)
    _upload(page, "seg-image", EXAMPLES / "4_pear.png")
    page.click("#seg-run")
    status = page.locator("#seg-status")
    expect(status).to_contain_text("Error: image 4_pear.png is 256x256 = 0.1 megapixels, over the limit of 0.001",
                                   timeout=RESULT_TIMEOUT)
    expect(status).to_contain_text("zeroseg demo --max-pixels")
    page.get_by_role("tab", name="Instances (ZSI)").click()
    _upload(page, "inst-image", EXAMPLES / "4_pear.png")
    page.click("#inst-run")
    expect(page.locator("#inst-status")).to_contain_text("over the limit of 0.001", timeout=RESULT_TIMEOUT)
    assert proc.poll() is None  # still serving


def test_handlers_without_browser(served, tmp_path):
    """The options the page offers, through the same functions the buttons call."""
    from zeroseg.webdemo import DemoHandlers, Models

    _, models = served
    handlers = DemoHandlers(models)
    image = str(EXAMPLES / "1_tiger-face_duck.png")
    base = models.semantic()
    base_templates = list(base.text_encoder.templates)
    overlay, fractions, files, status = handlers.segment(image, "tiger face,duck,other", 96, False, True, True,
                                                         "a photo of a {}\n")
    assert status.startswith("**Done:**") and Path(overlay).is_file() and set(fractions) == {"tiger face", "duck",
                                                                                           "other"}
    assert models.semantic(("a photo of a {}",)).model is base.model  # same network, own text cache
    assert base.text_encoder.templates == base_templates
    for args, message in [((-3,), "short side must be >= 0"), ((0.5,), "whole number"),
                          ((100_000,), "over the limit")]:
        assert message in handlers.segment(image, "duck,other", *args, False, False, False, "")[3]
    assert "exactly one '{}'" in handlers.segment(image, "duck,other", None, False, False, False, "{} {}")[3]
    assert "upload an image first" in handlers.segment(None, "duck", None, False, False, False, "")[3]
    assert "duplicate label" in handlers.detect(image, "duck,duck", 0.1, 5)[3]
    # a model that does not load is a message on each request, not a dead server
    missing = DemoHandlers(Models("no-such-model", "no-such-instances"))
    assert "unknown model 'no-such-model'" in missing.segment(image, "duck,other", None, False, False, False, "")[3]
    assert "unknown instance model 'no-such-instances'" in missing.detect(image, "duck", 0.1, 5)[3]


def test_demo_without_gradio_is_one_line_and_exit_2():
    code = "import sys; sys.modules['gradio'] = None; from zeroseg.cli import main; sys.exit(main(['demo']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "zeroseg: error: the web demo needs gradio, an optional dependency: pip install 'zeroseg[demo]'"]
