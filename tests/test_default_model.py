"""The embedded default model: ships inside the package, loads with no flags, finds objects."""
import sys
from pathlib import Path

import numpy as np
import pytest

import zeroseg
from zeroseg.cli import main
from zeroseg.models.registry import bundled_weights_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
DEMO_LABELS = ["tiger face", "bus", "violin", "pear", "castle", "duck", "other"]
# Measured 0.88 (mean over the 4 demo scenes) for the shipped model; calling every pixel an
# object would score the objects' share of the image, 0.14-0.29 on these scenes (mean 0.19).
# A regression floor, not a tuning target.
FOREGROUND_IOU_FLOOR = 0.35
sys.path.insert(0, str(EXAMPLES.parent))
from make_examples import demo_scenes  # noqa: E402  (examples/ is not a package)


@pytest.fixture(scope="module")
def default():
    return zeroseg.load_model()


def test_default_model_is_bundled_small_and_loads_without_flags(default):
    path = bundled_weights_path("default")
    assert path.is_file() and path.stat().st_size <= 25_000_000
    assert default.config.text_encoder == "minilm" and default.config.embed_dim == 384
    assert default.text_encoder.name == "minilm"


def test_default_model_separates_objects_from_background_on_unseen_classes(default):
    """The demo scenes (regenerated with their masks) hold only classes never seen in training."""
    ious = []
    for _name, image, truth, _present in demo_scenes():
        pred = default.segment(image, DEMO_LABELS).label_map
        fg_pred, fg_true = pred != DEMO_LABELS.index("other"), truth > 0
        ious.append((fg_pred & fg_true).sum() / (fg_pred | fg_true).sum())
    assert np.mean(ious) >= FOREGROUND_IOU_FLOOR, ious


# Measured 0.63 for the shipped model (0.44 with its seen-class relay switched off); among the
# six names a constant guess would get at most the largest object's share. A regression floor.
NAMING_FLOOR = 0.50


def test_default_model_names_the_unseen_objects_of_the_demo_scenes(default):
    """Share of object pixels (over the four scenes) given their true name."""
    from zeroseg.data.synth import load_class_list

    names = [c["name"] for c in load_class_list()]  # label i + 1 is class i
    right = total = 0
    for _name, image, truth, _present in demo_scenes():
        pred = default.segment(image, DEMO_LABELS).label_map
        for c in np.unique(truth[truth > 0]):
            m = truth == c
            right += int((pred[m] == DEMO_LABELS.index(names[c - 1])).sum())
            total += int(m.sum())
    assert default.relay_top_k > 0 and right / total >= NAMING_FLOOR, right / total


def test_shipped_demo_images_are_the_regenerated_scenes():
    from PIL import Image

    for name, image, _, _ in demo_scenes():
        assert np.array_equal(np.asarray(Image.open(EXAMPLES / name).convert("RGB")), image), name


def test_demo_command_writes_overlays(tmp_path, capsys):
    rc = main(["segment", str(EXAMPLES), "--labels", ",".join(DEMO_LABELS), "--out", str(tmp_path)])
    assert rc == 0
    assert len(list(tmp_path.glob("*_overlay.png"))) == len(list(EXAMPLES.glob("*.png"))) == 4
    assert "->" in capsys.readouterr().out
