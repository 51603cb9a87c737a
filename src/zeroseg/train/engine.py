"""Training LSeg on seen classes: config, (distributed) loop, checkpoints and exact resume.

The text encoder is frozen: the label set ``["other"] + seen`` is embedded once and every
training image is scored against all of it, as in the LSeg paper. Model selection uses the
seen-class mIoU of the val split; unseen classes never reach this module.

Outputs in ``cfg["out"]``: ``epoch_NNN.safetensors`` (each epoch), ``best.safetensors`` (by val
seen mIoU), ``last.safetensors``, ``state.pt`` (for ``--resume``; ``torch.load(weights_only=True)``),
``log.csv`` and ``config.yaml``. Every file is written to a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import functools
import hashlib
import io
import math
import os
import random
import re
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ..data.dataset import DatasetIndex
from ..errors import ZerosegError
from ..io import atomic_path
from ..text.base import TextEncoder
from . import losses
from .data import (
    AugmentConfig,
    EpochShardSampler,
    SeenSegmentationDataset,
    calibration_classes,
    pad_collate,
    seen_label_set,
)

STATE_FORMAT = "zeroseg-train-state/1"
LOG_FIELDS = ["epoch", "step", "loss", "lr", "val_seen_miou", "seconds"]


# ----------------------------------------------------------------------------- config
def default_config(defaults: str = "default.yaml") -> dict:
    text = resources.files("zeroseg.train").joinpath(defaults).read_text()
    return yaml.safe_load(text)


def _merge(base: dict, update: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise ZerosegError(f"unknown config key {key!r} in {where}; known: {', '.join(sorted(out))}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'lr=1e-3' -> (['lr'], 0.001); 'model_overrides.features=32' -> (['model_overrides', 'features'], 32)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ZerosegError(f"expected key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ZerosegError(f"cannot parse the value of {item!r}: {str(e).splitlines()[0]}") from None
    return key.strip().split("."), value


def load_config(path: str | None, overrides: list[str] | None = None, base: dict | None = None,
                defaults: str = "default.yaml", validate=None) -> dict:
    """Defaults <- ``base`` (e.g. a resumed run's config) <- YAML file ``path`` <- ``key=value`` overrides.

    ``defaults`` names the YAML of defaults in zeroseg.train and ``validate`` the checker
    (semantic training's unless given), so instance training reuses the same machinery.
    """
    cfg = default_config(defaults)
    if base:
        cfg = _merge(cfg, base, "the resumed run's config")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ZerosegError(f"config file not found: {p}")
        try:
            user = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ZerosegError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError:
            raise ZerosegError(f"cannot parse {p}: not a UTF-8 text file (a YAML config was expected)") from None
        except OSError as e:
            raise ZerosegError(f"cannot read {p}: {e.strerror or e}") from None
        if not isinstance(user, dict):
            raise ZerosegError(f"{p} must hold a mapping of config keys")
        cfg = _merge(cfg, user, str(p))
    for item in overrides or []:
        keys, value = parse_override(item)
        if keys[0] not in cfg:
            raise ZerosegError(f"unknown config key {keys[0]!r}; known: {', '.join(sorted(cfg))}")
        node = cfg
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                raise ZerosegError(f"{'.'.join(keys)}: {k!r} is not a mapping")
            node = node[k]
        node[keys[-1]] = value
    (validate or validate_config)(cfg)
    return cfg


FLOAT_KEYS = ("lr", "weight_decay", "momentum", "backbone_lr_mult", "poly_power", "color_jitter", "style_augment",
              "scale_min", "scale_max", "edge_loss_weight", "grad_clip")


def _coerce_floats(cfg: dict) -> None:
    """PyYAML (YAML 1.1) reads '1e-3' as a string: accept it as the number it means."""
    for key in FLOAT_KEYS:
        v = cfg.get(key)
        if isinstance(v, str):
            try:
                cfg[key] = float(v)
            except ValueError:
                pass


def check_common_config(cfg: dict, ints: tuple[str, ...] = (), optional_ints: tuple[str, ...] = (),
                        floats: tuple[str, ...] = ()) -> None:
    """The checks every training task shares, plus task-specific integer and float keys."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ZerosegError(msg)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(bool(cfg.get("data")), "no dataset: set data=DIR (a directory with index.json)")
    need(bool(cfg.get("out")), "no output directory: set out=DIR")
    need(isinstance(cfg.get("model"), str), "model must be a registered model name")
    need(isinstance(cfg.get("model_overrides") or {}, dict), "model_overrides must be a mapping")
    for key in ("epochs", "batch_size", "log_every", "val_every", *ints):
        need(is_int(cfg.get(key)) and cfg[key] >= 1, f"{key} must be an integer >= 1, not {cfg.get(key)!r}")
    for key in ("num_workers", "warmup_iters", "keep_last", "seed", "state_every"):
        need(is_int(cfg.get(key)) and cfg[key] >= 0, f"{key} must be an integer >= 0, not {cfg.get(key)!r}")
    for key in ("max_steps", "num_threads", *optional_ints):
        need(cfg.get(key) is None or (is_int(cfg[key]) and cfg[key] >= 1), f"{key} must be null or an integer >= 1")
    _coerce_floats(cfg)
    for key in ("lr", "weight_decay", "momentum", "backbone_lr_mult", "poly_power", "color_jitter", *floats):
        v = cfg.get(key)
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, f"{key} must be a number >= 0")
    need(cfg["lr"] > 0, "lr must be > 0")
    need(cfg["color_jitter"] < 1, "color_jitter must be < 1")
    need(cfg.get("grad_clip") is None or (isinstance(cfg["grad_clip"], (int, float)) and cfg["grad_clip"] > 0),
         "grad_clip must be null or > 0")
    need(cfg.get("optimizer") in ("adamw", "sgd"), f"optimizer must be adamw or sgd, not {cfg.get('optimizer')!r}")
    need(cfg.get("lr_schedule") in ("poly", "constant"), "lr_schedule must be poly or constant")
    dev = str(cfg.get("device"))
    need(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"), "device must be auto, cpu, cuda or cuda:N")
    for key in ("amp", "hflip", "freeze_bn", "sync_bn", "tensorboard"):
        need(isinstance(cfg.get(key), bool), f"{key} must be true or false")


def check_held_out_config(cfg: dict) -> None:
    """``style_augment`` (a probability) and ``calibration_classes`` (a count), shared by both tasks."""
    if not 0 <= cfg["style_augment"] <= 1:
        raise ZerosegError("style_augment is a probability: need 0 <= style_augment <= 1")
    cc = cfg["calibration_classes"]
    if isinstance(cc, bool) or not isinstance(cc, int) or cc < 0:
        raise ZerosegError(f"calibration_classes must be an integer >= 0, not {cc!r}")


def validate_config(cfg: dict) -> None:
    """Semantic (LSeg) training's config checks."""
    check_common_config(cfg, ints=("crop_size",), optional_ints=("val_size",),
                        floats=("scale_min", "scale_max", "edge_loss_weight", "style_augment"))
    if not 0 < cfg["scale_min"] <= cfg["scale_max"]:
        raise ZerosegError("need 0 < scale_min <= scale_max")
    check_held_out_config(cfg)
    pb = cfg["pretrained_backbone"]
    if pb is not None and (not isinstance(pb, str) or not pb.strip()):
        raise ZerosegError("pretrained_backbone must be a tag (e.g. imagenet) or a weights file path")
    if pb and cfg["init_from"]:
        raise ZerosegError("pretrained_backbone and init_from exclude each other (init_from loads every weight)")
    losses.check_loss_config(cfg)


# ----------------------------------------------------------------------------- text encoders
class RandomTextEncoder(TextEncoder):
    """TEST/DEBUG ONLY (spec ``random:D``): a fixed unit vector per label, seeded by its SHA-256.

    Same vectors in every process and every run, no weights to load; it carries no meaning,
    so a model trained with it segments nothing useful.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.name = f"random:{self.dim}"

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(t.encode()).hexdigest()[:15], 16))
            rows.append(torch.randn(self.dim, generator=g))
        return torch.stack(rows)


def make_text_encoder(spec: str) -> TextEncoder:
    if spec.startswith("random:"):
        try:
            dim = int(spec.partition(":")[2])
        except ValueError:
            raise ZerosegError(f"bad text encoder {spec!r}; expected random:<dim>") from None
        return RandomTextEncoder(dim)
    from ..text import create_text_encoder

    return create_text_encoder(spec)


# ----------------------------------------------------------------------------- distributed
class Dist:
    """World size, rank and device of this process; owns the process group it created."""

    def __init__(self, device_cfg: str):
        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        if dist.is_available() and dist.is_initialized():
            self.world, self.rank = dist.get_world_size(), dist.get_rank()
        else:
            self.world, self.rank = env_world, int(os.environ.get("RANK", "0"))
        if device_cfg == "auto":
            device_cfg = "cuda" if torch.cuda.is_available() else "cpu"
        if device_cfg == "cuda":
            device_cfg = f"cuda:{self.local_rank}"
        if device_cfg.startswith("cuda") and not torch.cuda.is_available():
            raise ZerosegError(f"device={device_cfg} but CUDA is not available")
        self.device = torch.device(device_cfg)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
            self.owns_group = True

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """RNG states as tensors and plain lists (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def read_state(path: str | Path) -> dict:
    """A training state from ``state.pt`` or the run directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / "state.pt"
    if not p.is_file():
        raise ZerosegError(f"no training state to resume at {path} (expected a run directory or its state.pt)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file or forbidden objects: say which, in one line
        raise ZerosegError(f"cannot read training state {p}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ZerosegError(f"{p} is not a zeroseg training state")
    return state


# ----------------------------------------------------------------------------- helpers
def lr_factor(step: int, total: int, cfg: dict) -> float:
    """Poly decay (1 - step/total)^power times a linear warmup over ``warmup_iters`` steps."""
    f = 1.0
    if cfg["lr_schedule"] == "poly":
        f = (1.0 - min(step, total) / max(total, 1)) ** float(cfg["poly_power"])
    w = int(cfg["warmup_iters"])
    if w > 0 and step < w:
        f *= (step + 1) / w
    return f


def param_groups(model: nn.Module, cfg: dict, backbone_prefix: str = "image_encoder.") -> list[dict]:
    """(image encoder | rest) x (decay | no decay: biases and norm weights, i.e. 1-D tensors)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith(backbone_prefix), p.ndim > 1), []).append(p)
    out = []
    for (backbone, decay), params in sorted(groups.items()):
        lr = float(cfg["lr"]) * (float(cfg["backbone_lr_mult"]) if backbone else 1.0)
        out.append({"params": params, "lr": lr, "base_lr": lr,
                    "weight_decay": float(cfg["weight_decay"]) if decay else 0.0})
    return out


def model_outputs(model: nn.Module, x: torch.Tensor, text: torch.Tensor, with_edges: bool) -> dict:
    """What ``losses.compute_loss`` needs: logits, and boundary logits when the edge loss is on."""
    if not with_edges:
        return {"logits": model(x, text)}
    logits, edges = model(x, text, with_edges=True)
    return {"logits": logits, "edge_logits": edges}


def freeze_unused_parameters(model: nn.Module, text: torch.Tensor, stride: int, with_edges: bool = False) -> list[str]:
    """Stop training parameters the forward pass never uses (e.g. DPT's deepest lateral unit,
    a ViT's classifier head), found by one backward pass in eval mode (no buffer updates, no
    RNG). DDP would otherwise fail on them, and find_unused_parameters costs every step."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = torch.zeros(1, 3, 2 * stride, 2 * stride, device=text.device)
            sum(o.float().sum() for o in model_outputs(model, x, text, with_edges).values()).backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    return unused


def set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def seen_miou(conf: torch.Tensor) -> float:
    """Mean IoU over seen classes (label-set positions 1..C-1), skipping classes absent from
    both prediction and ground truth; NaN if none is present."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = inter[1:] / union[1:]
    iou = iou[union[1:] > 0]
    return float(iou.mean()) if iou.numel() else float("nan")


def _plain(obj: Any) -> Any:
    """Config values as plain containers (for YAML and ``weights_only`` states)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _one_line(e: ZerosegError) -> str:
    """A DataLoader worker re-raises our error with its whole traceback: keep the message."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return str(e).strip()
    last = lines[-1]
    return last.split("ZerosegError: ", 1)[1] if "ZerosegError: " in last else last


# Temporary files of zeroseg.io.atomic_path for a run's own outputs: ".<name>.<random>.tmp".
_RUN_TEMP = re.compile(r"^\.(state\.pt|.+\.safetensors|log\.csv|config\.yaml)\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temp_files(out: Path) -> list[str]:
    """Delete half-written files a killed run left behind (only one process writes a run's
    folder, so at start any such file is stale); returns their names."""
    removed = []
    for f in out.iterdir():
        if _RUN_TEMP.match(f.name) and f.is_file():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f.name)
    return removed


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class CsvLog:
    """``log.csv``; on resume, rows after the resumed step are dropped (atomic rewrite)."""

    def __init__(self, path: Path, resume_step: int | None, fields: list[str] | None = None):
        self.path = path
        self.fields = fields or LOG_FIELDS
        rows: list[dict] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in self.fields} for r in rows)
        _write_text_atomic(path, buf.getvalue())

    def write(self, **row: Any) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, self.fields, lineterminator="\n").writerow({k: row.get(k, "") for k in self.fields})
        # one append of the whole line: a crash cannot leave a half row in practice
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, buf.getvalue().encode())
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Builds everything from a config; ``run()`` trains and returns the summary.

    After ``run()`` the trained network is ``self.module`` (unwrapped from DDP).

    Subclasses for other tasks (instance segmentation) override the task hooks:
    ``_setup_task``, ``_after_to_device``, ``train_step``, ``validate``, ``_save_model``,
    plus the class attributes naming their defaults and validation metric.
    """

    DEFAULTS = "default.yaml"
    METRIC = "val_seen_miou"        # the validation score: model selection, log.csv column
    METRIC_TEXT = "val seen mIoU"
    BACKBONE_PREFIX = "image_encoder."  # parameters trained at lr * backbone_lr_mult

    @staticmethod
    def validate_config(cfg: dict) -> None:
        validate_config(cfg)

    def __init__(self, cfg: dict, resume: str | None = None, progress: bool = True):
        # a partial dict is fine: defaults fill the rest, unknown keys are errors
        self.cfg = _plain(_merge(default_config(self.DEFAULTS), cfg, "the config"))
        self.validate_config(self.cfg)
        self.resume_state = read_state(resume) if resume else None
        self.progress = progress
        self.dist = Dist(str(self.cfg["device"]))
        try:
            self._setup()
        except BaseException:
            self.dist.close()
            raise

    # -- setup -------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg, d = self.cfg, self.dist
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        seed = int(cfg["seed"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # same initial weights in every process

        self._read_data()
        self.out = Path(cfg["out"])
        if d.main:
            from ..io import ensure_writable_dir

            ensure_writable_dir(self.out)
            remove_stale_temp_files(self.out)
        self.collate_fn = None
        self._setup_task()
        self.sampler = EpochShardSampler(len(self.train_ds), int(cfg["batch_size"]), d.world, d.rank, seed)
        self.local_batch = int(cfg["batch_size"]) // d.world
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * int(cfg["epochs"])
        pin = d.device.type == "cuda"
        # Loader-private generators: creating iterators must not consume the global torch RNG.
        self.train_loader = DataLoader(self.train_ds, batch_size=self.local_batch, sampler=self.sampler,
                                       num_workers=int(cfg["num_workers"]), pin_memory=pin,
                                       collate_fn=self.collate_fn, generator=torch.Generator().manual_seed(seed))

        self.module.to(d.device)
        if cfg["sync_bn"] and d.distributed:
            if d.device.type != "cuda":
                raise ZerosegError("sync_bn needs CUDA; on CPU leave sync_bn=false")
            self.module = nn.SyncBatchNorm.convert_sync_batchnorm(self.module)
        self._after_to_device()
        self.model: nn.Module = self.module
        if d.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.module, device_ids=[d.device.index] if pin else None)
        if cfg["optimizer"] == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(param_groups(self.module, cfg, self.BACKBONE_PREFIX))
        else:
            self.optimizer = torch.optim.SGD(param_groups(self.module, cfg, self.BACKBONE_PREFIX), momentum=float(cfg["momentum"]))
        use_cuda_amp = bool(cfg["amp"]) and d.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_cuda_amp)
        self.autocast_dtype = (torch.float16 if d.device.type == "cuda" else torch.bfloat16) if cfg["amp"] else None

        self.epoch, self.epoch_step, self.global_step = 0, 0, 0
        self.best, self.best_epoch, self.last_val = float("-inf"), None, float("nan")
        self.elapsed_before = 0.0
        self.checkpoints: list[str] = []
        if self.resume_state is not None:
            self._load_state(self.resume_state)

    def _read_data(self) -> None:
        """The dataset's index and the label set training scores against (background first)."""
        self.index = DatasetIndex.read(self.cfg["data"])
        self.held_out = calibration_classes(self.index, int(self.cfg.get("calibration_classes") or 0),
                                            int(self.cfg["seed"]))
        self.labels = seen_label_set(self.index, self.held_out)
        self.seen, self.unseen = list(self.index.seen), list(self.index.unseen)

    def _setup_task(self) -> None:
        """Model, frozen label embeddings, ``train_ds`` and ``val_loader`` (LSeg semantic segmentation)."""
        cfg, d = self.cfg, self.dist
        seed = int(cfg["seed"])
        self.with_edges = float(cfg["edge_loss_weight"] or 0.0) > 0
        self.module = self._build_model()
        spec = cfg["text_encoder"] or self.module.config.text_encoder
        self.text_encoder = make_text_encoder(spec)
        if not spec.startswith("random:"):
            self.module.config.text_encoder = spec  # saved models then embed labels as training did
        text = self.text_encoder.encode(self.labels).float()
        if text.shape[1] != self.module.config.embed_dim:
            raise ZerosegError(f"text encoder {spec!r} gives {text.shape[1]}-d embeddings but the model's "
                               f"embed_dim is {self.module.config.embed_dim}")
        self.text = text.to(d.device)
        if d.distributed:  # bitwise-identical label embeddings in every process
            dist.broadcast(self.text, 0)

        stride = self.module.stride
        if cfg["crop_size"] % stride:
            raise ZerosegError(f"crop_size {cfg['crop_size']} is not a multiple of the model stride {stride}")
        mean, std = self.module.config.mean, self.module.config.std
        aug = AugmentConfig(cfg["crop_size"], float(cfg["scale_min"]), float(cfg["scale_max"]),
                            bool(cfg["hflip"]), float(cfg["color_jitter"]), float(cfg["style_augment"]))
        self.train_ds = SeenSegmentationDataset(self.index, "train", mean, std, train=True, augment=aug, seed=seed,
                                                held_out=self.held_out)
        val_ds = SeenSegmentationDataset(self.index, "val", mean, std, train=False,
                                         eval_size=cfg["val_size"] or cfg["crop_size"], held_out=self.held_out)
        workers = int(cfg["num_workers"])
        pin = d.device.type == "cuda"
        shard = torch.utils.data.Subset(val_ds, list(range(d.rank, len(val_ds), d.world)))
        self.val_loader = DataLoader(shard, batch_size=int(cfg["batch_size"]) // d.world, shuffle=False,
                                     num_workers=workers, pin_memory=pin,
                                     collate_fn=functools.partial(pad_collate, multiple=stride),
                                     generator=torch.Generator().manual_seed(seed))

    def _after_to_device(self) -> None:
        self.unused_parameters = freeze_unused_parameters(self.module, self.text, self.module.stride,
                                                          self.with_edges)

    def _build_model(self) -> nn.Module:
        from ..models.registry import create_model

        cfg = self.cfg
        if cfg["init_from"]:
            from ..models.loading import load_safetensors_model

            model, _text, _ = load_safetensors_model(cfg["init_from"], with_text=False)
            if self.with_edges:
                model.add_edge_head()
            return model.train()
        overrides = dict(cfg["model_overrides"] or {})
        if self.with_edges:
            overrides["edge_head"] = True
        try:
            return create_model(cfg["model"], pretrained_backbone=cfg["pretrained_backbone"], **overrides).train()
        except (ValueError, TypeError) as e:
            raise ZerosegError(f"cannot build model {cfg['model']!r}: {e}") from None

    def _load_state(self, s: dict) -> None:
        if s.get("labels") != self.labels:
            raise ZerosegError("cannot resume: the dataset's seen label set differs from the resumed run's")
        if s["epoch_step"] and s["global_batch"] != int(self.cfg["batch_size"]):
            raise ZerosegError(f"cannot resume mid-epoch with batch_size {self.cfg['batch_size']} "
                               f"(the run used {s['global_batch']})")
        try:
            self.module.load_state_dict(s["model"])
            self.optimizer.load_state_dict(s["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ZerosegError(f"cannot resume: the state does not fit this model/optimizer: "
                               f"{str(e).splitlines()[0]}") from None
        if s.get("scaler"):
            self.scaler.load_state_dict(s["scaler"])
        self.epoch, self.epoch_step, self.global_step = int(s["epoch"]), int(s["epoch_step"]), int(s["global_step"])
        self.best = float(s["best_val_seen_miou"])
        self.best_epoch = s.get("best_epoch")
        self.last_val = float(s.get("last_val_seen_miou", float("nan")))
        self.elapsed_before = float(s.get("elapsed_seconds", 0.0))
        self.checkpoints = list(s.get("checkpoints", []))
        set_rng_state(s["rng"])

    # -- state and checkpoints -------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "config": self.cfg,
            "labels": list(self.labels),
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,  # the epoch to run next (or continue)
            "epoch_step": self.epoch_step,  # its global batches already done
            "global_step": self.global_step,
            "scheduler_step": self.global_step,  # the lr is a function of the global step
            "total_steps": self.total_steps,
            "global_batch": int(self.cfg["batch_size"]),
            "world_size": self.dist.world,
            "data_order": {"algorithm": "randperm(seed+epoch), global batches dealt to ranks",
                           "seed": int(self.cfg["seed"]), "epoch": self.epoch,
                           "start_position": self.epoch_step * int(self.cfg["batch_size"])},
            "best_val_seen_miou": self.best,
            "best_epoch": self.best_epoch,
            "last_val_seen_miou": self.last_val,
            "elapsed_seconds": self.elapsed_before + (time.perf_counter() - self.t0),
            "checkpoints": list(self.checkpoints),
            "rng": rng_state(),
        }

    def _save_state(self) -> None:
        if not self.dist.main:
            return
        state = self._state()
        with atomic_path(self.out / "state.pt") as tmp:
            torch.save(state, tmp)

    def _save_model(self, path: Path, completed_epochs: int, val: float) -> None:
        from ..models.loading import save_safetensors

        extra = {"epoch": completed_epochs, "global_step": self.global_step,
                 "val_seen_miou": None if math.isnan(val) else val, "labels": self.labels,
                 "seen": self.seen, "unseen": self.unseen, "dataset": str(self.cfg["data"]),
                 "calibration_classes": list(self.held_out),
                 "train_text_encoder": self.text_encoder.name if isinstance(self.text_encoder, RandomTextEncoder)
                 else self.module.config.text_encoder}
        save_safetensors(path, self.module, text_encoder=self.text_encoder, extra=extra)

    def _checkpoint(self, val: float, epoch_done: bool) -> None:
        """Epoch file (if an epoch ended), last, best; rank 0 only."""
        if not self.dist.main:
            return
        completed = self.epoch + 1 if epoch_done else self.epoch
        last = self.out / "last.safetensors"
        self._save_model(last, completed, val)
        if epoch_done:
            name = f"epoch_{completed:03d}.safetensors"
            self._save_model(self.out / name, completed, val)
            self.checkpoints.append(name)
            keep = int(self.cfg["keep_last"])
            while keep and len(self.checkpoints) > keep:
                with contextlib.suppress(FileNotFoundError):
                    (self.out / self.checkpoints.pop(0)).unlink()
        if not math.isnan(val) and val > self.best:
            self._save_model(self.out / "best.safetensors", completed, val)

    # -- validation --------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float:
        """Seen-class mIoU on the val split (sharded over processes, confusion summed)."""
        c = len(self.labels)
        conf = torch.zeros(c, c, dtype=torch.int64, device=self.dist.device)
        self.module.eval()
        try:
            for batch in self.val_loader:
                x = batch["image"].to(self.dist.device, non_blocking=True)
                y = batch["target"].to(self.dist.device, non_blocking=True)
                with self._autocast():
                    pred = self.module(x, self.text).argmax(1)
                valid = y != 255
                conf += torch.bincount(y[valid] * c + pred[valid], minlength=c * c).view(c, c)
        finally:
            self._train_mode()
        return seen_miou(self.dist.all_reduce_sum(conf).cpu())

    def _sync_bn_buffers(self) -> None:
        """Average BatchNorm running statistics over processes, so all ranks hold one model."""
        if not self.dist.distributed or self.cfg["sync_bn"]:
            return
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                for buf in (m.running_mean, m.running_var):
                    self.dist.all_reduce_sum(buf.data)
                    buf.data /= self.dist.world

    # -- training ----------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    def _train_mode(self) -> None:
        self.module.train()
        if self.cfg["freeze_bn"]:
            set_bn_eval(self.module)

    def _set_lr(self) -> float:
        f = lr_factor(self.global_step, self.total_steps, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return float(self.cfg["lr"]) * f  # the head's lr (the image encoder's is x backbone_lr_mult)

    def train_step(self, batch: dict) -> torch.Tensor:
        d = self.dist
        lr = self._set_lr()
        x = batch["image"].to(d.device, non_blocking=True)
        target = batch["target"].to(d.device, non_blocking=True)
        with self._autocast():
            outputs = model_outputs(self.model, x, self.text, self.with_edges)
        loss, _parts = losses.compute_loss(outputs, {**batch, "image": x, "target": target}, self.cfg)
        self._optimize(loss)
        self.lr = lr
        return loss.detach()

    def _optimize(self, loss: torch.Tensor) -> None:
        """Backward (scaled under AMP), optional global-norm clipping, optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), float(self.cfg["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def run(self) -> dict:
        d = self.dist
        self.t0 = time.perf_counter()
        self._bar = None
        try:
            return self._run()
        except ZerosegError as e:
            raise ZerosegError(_one_line(e)) from None
        finally:
            if self._bar is not None:  # an error then starts on a line of its own, not after the bar
                self._bar.close()
            d.close()

    def _say(self, msg: str) -> None:
        if self.dist.main and self.progress:
            from tqdm import tqdm

            tqdm.write(f"zeroseg train: {msg}", file=sys.stderr)

    def _run(self) -> dict:
        cfg, d = self.cfg, self.dist
        resumed = self.resume_state is not None
        log = tb = None
        if d.main:
            _write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
            log = CsvLog(self.out / "log.csv", self.global_step if resumed else None,
                         [f if f != "val_seen_miou" else self.METRIC for f in LOG_FIELDS])
            if cfg["tensorboard"]:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    tb = SummaryWriter(str(self.out / "tb"))
                except ImportError:
                    self._say("tensorboard is not installed; logging to log.csv only")
        self._say(f"{d.world} process(es) on {d.device}, {len(self.train_ds)} train images, labels {self.labels}, "
                  f"{self.steps_per_epoch} steps/epoch, {cfg['epochs']} epochs")
        self._train_mode()
        max_steps = cfg["max_steps"]
        train_seconds, images = 0.0, 0
        loss_sum, loss_n = torch.zeros((), device=d.device), 0
        self.lr = float(cfg["lr"]) * lr_factor(self.global_step, self.total_steps, cfg)
        stopped = bool(max_steps and self.global_step >= max_steps)
        bar = None
        while self.epoch < int(cfg["epochs"]) and not stopped:
            self.sampler.set_epoch(self.epoch, self.epoch_step)
            self.train_ds.set_epoch(self.epoch)
            if d.main and self.progress:
                from ..progress import progress

                bar = self._bar = progress(total=self.steps_per_epoch, initial=self.epoch_step, desc=f"epoch {self.epoch + 1}",
                           unit="step", dynamic_ncols=True, leave=False)
            tick = time.perf_counter()
            for batch in self.train_loader:
                loss = self.train_step(batch)
                self.global_step += 1
                self.epoch_step += 1
                images += int(cfg["batch_size"])
                loss_sum += loss
                loss_n += 1
                if self.global_step % int(cfg["log_every"]) == 0:
                    mean_loss = float(d.all_reduce_sum(loss_sum.clone())) / (loss_n * d.world)
                    loss_sum.zero_()
                    loss_n = 0
                    if log:
                        log.write(epoch=self.epoch + 1, step=self.global_step, loss=f"{mean_loss:.6f}",
                                  lr=f"{self.lr:.6g}", seconds=f"{self._elapsed():.2f}")
                    if tb:
                        tb.add_scalar("train/loss", mean_loss, self.global_step)
                        tb.add_scalar("train/lr", self.lr, self.global_step)
                if cfg["state_every"] and self.global_step % int(cfg["state_every"]) == 0 \
                        and self.epoch_step < self.steps_per_epoch:
                    self._save_state()  # a crash mid-epoch loses at most state_every steps
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{self.lr:.2e}")
                if max_steps and self.global_step >= max_steps:
                    stopped = True
                    break
            train_seconds += time.perf_counter() - tick
            if bar:
                bar.close()
            epoch_done = self.epoch_step >= self.steps_per_epoch
            last_epoch = epoch_done and self.epoch + 1 == int(cfg["epochs"])
            do_val = stopped or last_epoch or (epoch_done and (self.epoch + 1) % int(cfg["val_every"]) == 0)
            self._sync_bn_buffers()
            val = self.validate() if do_val else float("nan")
            if do_val:
                self.last_val = val
                self._say(f"epoch {self.epoch + 1} step {self.global_step}: {self.METRIC_TEXT} {val:.4f}")
                if log:
                    log.write(epoch=self.epoch + 1, step=self.global_step, lr=f"{self.lr:.6g}",
                              **{self.METRIC: f"{val:.6f}"}, seconds=f"{self._elapsed():.2f}")
                if tb:
                    tb.add_scalar(f"val/{self.METRIC}", val, self.global_step)
            self._checkpoint(val, epoch_done)
            if not math.isnan(val) and val > self.best:
                self.best, self.best_epoch = val, self.epoch + 1
            if epoch_done:
                self.epoch, self.epoch_step = self.epoch + 1, 0
            self._save_state()
            d.barrier()  # no rank races ahead of the files rank 0 is writing
        if tb:
            tb.close()
        seconds = self._elapsed()
        best = self.out / "best.safetensors"
        return {
            f"best_{self.METRIC}": None if self.best == float("-inf") else self.best,
            "best_epoch": self.best_epoch,
            f"last_{self.METRIC}": None if math.isnan(self.last_val) else self.last_val,
            "epochs": self.epoch,
            "global_step": self.global_step,
            "seconds": seconds,
            "train_seconds": train_seconds,
            "images_per_second": images / train_seconds if train_seconds > 0 else None,
            "world_size": d.world,
            "device": str(d.device),
            "labels": list(self.labels),
            "out": str(self.out),
            "best": str(best) if best.is_file() else None,
            "last": str(self.out / "last.safetensors"),
            "state": str(self.out / "state.pt"),
            "log": str(self.out / "log.csv"),
            "checkpoints": [str(self.out / c) for c in self.checkpoints],
        }

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0


def train(cfg: dict, resume: str | None = None, progress: bool = True) -> dict:
    """Train (or continue training) as ``cfg`` says; returns a summary (see ``Trainer._run``)."""
    return Trainer(cfg, resume=resume, progress=progress).run()
