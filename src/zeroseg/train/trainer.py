"""The generic training loop (``Trainer``) that semantic (``engine``) and instance
(``instances``) training implement; see ``Trainer``'s docstring for the task interface.

Outputs in ``cfg["out"]``: ``epoch_NNN.safetensors`` (each epoch), ``best.safetensors`` (by the
validation score), ``last.safetensors``, ``state.pt`` (for ``--resume``), ``log.csv`` and
``config.yaml``. Every file is written to a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ..data.dataset import DatasetIndex
from ..errors import ZerosegError
from ..io import ensure_writable_dir
from ..models.weight_io import write_torch_file
from ..progress import progress
from ..text import create_text_encoder
from ..text.random import RandomTextEncoder
from .config import resolve_config, validate_config
from .data import EpochShardSampler, calibration_classes, seen_label_set
from .distributed import Dist
from .optim import lr_factor, param_groups, set_bn_eval
from .state import (
    LOG_FIELDS,
    STATE_FORMAT,
    CsvLog,
    read_state,
    remove_stale_temp_files,
    rng_state,
    set_rng_state,
    write_text_atomic,
)

__all__ = ["Trainer", "make_text_encoder"]


def make_text_encoder(spec: str):
    """The text encoder of ``spec`` (``zeroseg.text.create_text_encoder``), uncached: training
    embeds each label set once."""

    return create_text_encoder(spec, cache=False)


def _one_line(e: ZerosegError) -> str:
    """A DataLoader worker re-raises our error with its whole traceback: keep the message."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return str(e).strip()
    last = lines[-1]
    return last.split("ZerosegError: ", 1)[1] if "ZerosegError: " in last else last


class Trainer:
    """The training loop every zeroseg task shares: config, (distributed) data order, optimizer,
    AMP, logging, checkpoints and exact resume. ``run()`` trains and returns the summary; after it
    the trained network is ``self.module`` (unwrapped from DDP).

    A task (``engine.LSegTrainer``, ``instances.InstanceTrainer``) implements the interface:

    - ``DEFAULTS`` (its YAML of defaults), ``METRIC`` / ``METRIC_TEXT`` (the validation score,
      for model selection and log.csv), ``BACKBONE_PREFIX`` (parameters at lr x backbone_lr_mult);
    - ``validate_config(cfg)``; ``read_data()`` (sets ``labels``, ``seen``, ``unseen``,
      ``held_out``); ``setup_task()`` (sets ``module``, ``text``, ``train_ds``, optionally
      ``collate_fn``); ``after_to_device()``; ``train_step(batch) -> loss``;
      ``validate() -> score``; ``save_model(path, completed_epochs, score)``.
    """

    DEFAULTS = "default.yaml"
    METRIC = "val_seen_miou"
    METRIC_TEXT = "val seen mIoU"
    BACKBONE_PREFIX = "image_encoder."

    validate_config = staticmethod(validate_config)  # the task's config checks

    # -- the task interface ----------------------------------------------------------------
    def read_data(self) -> None:
        """The synthetic dataset's index and the label set training scores against (background first)."""
        self.index = DatasetIndex.read(self.cfg["data"])
        self.held_out = calibration_classes(self.index, int(self.cfg.get("calibration_classes") or 0),
                                            int(self.cfg["seed"]))
        self.labels = seen_label_set(self.index, self.held_out)
        self.seen, self.unseen = list(self.index.seen), list(self.index.unseen)

    def setup_task(self) -> None:
        raise NotImplementedError

    def after_to_device(self) -> None:
        pass

    def train_step(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> float:
        raise NotImplementedError

    def save_model(self, path: Path, completed_epochs: int, val: float) -> None:
        raise NotImplementedError

    def embed_labels(self, names: list[str]) -> torch.Tensor:
        """The frozen text encoder (``cfg["text_encoder"]`` or the model's) and ``names``' embeddings
        on the device, checked against the model's ``embed_dim``, identical in every process."""
        spec = self.cfg["text_encoder"] or self.module.config.text_encoder
        self.text_encoder = make_text_encoder(spec)
        if not spec.startswith("random:"):
            self.module.config.text_encoder = spec  # saved models then embed labels as training did
        text = self.text_encoder.encode(names).float()
        if text.shape[1] != self.module.config.embed_dim:
            raise ZerosegError(f"text encoder {spec!r} gives {text.shape[1]}-d embeddings but the model's "
                               f"embed_dim is {self.module.config.embed_dim}")
        text = text.to(self.dist.device)
        if self.dist.distributed:  # bitwise-identical label embeddings in every process
            dist.broadcast(text, 0)
        return text

    def trained_text_encoder(self) -> str:
        """What a saved model records as ``train_text_encoder`` (see ``text_encoder_spec``)."""
        return self.text_encoder.name if isinstance(self.text_encoder, RandomTextEncoder) \
            else self.module.config.text_encoder

    def __init__(self, cfg: dict, resume: str | None = None, progress: bool = True):
        self.resume_state = read_state(resume) if resume else None
        self.cfg = resolve_config(cfg, self.resume_state, self.DEFAULTS)
        self.validate_config(self.cfg)
        self.progress = progress
        self.dist = Dist(str(self.cfg["device"]))
        try:
            self._setup()
        except BaseException:
            self.dist.close()
            raise

    def _setup(self) -> None:
        cfg, d = self.cfg, self.dist
        if cfg["num_threads"]:
            torch.set_num_threads(int(cfg["num_threads"]))
        seed = int(cfg["seed"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # same initial weights in every process

        self.read_data()
        self.out = Path(cfg["out"])
        if d.main:
            ensure_writable_dir(self.out)
            remove_stale_temp_files(self.out)
        self.collate_fn = None
        self.setup_task()
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
        self.after_to_device()
        self.model: nn.Module = self.module
        if d.distributed:
            from torch.nn.parallel import DistributedDataParallel  # heavy

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

        write_torch_file(self.out / "state.pt", self._state())

    def _checkpoint(self, val: float, epoch_done: bool) -> None:
        """Epoch file (if an epoch ended), last, best; rank 0 only."""
        if not self.dist.main:
            return
        completed = self.epoch + 1 if epoch_done else self.epoch
        last = self.out / "last.safetensors"
        self.save_model(last, completed, val)
        if epoch_done:
            name = f"epoch_{completed:03d}.safetensors"
            self.save_model(self.out / name, completed, val)
            self.checkpoints.append(name)
            keep = int(self.cfg["keep_last"])
            while keep and len(self.checkpoints) > keep:
                with contextlib.suppress(FileNotFoundError):
                    (self.out / self.checkpoints.pop(0)).unlink()
        if not math.isnan(val) and val > self.best:
            self.save_model(self.out / "best.safetensors", completed, val)

    def _sync_bn_buffers(self) -> None:
        """Average BatchNorm running statistics over processes, so all ranks hold one model."""
        if not self.dist.distributed or self.cfg["sync_bn"]:
            return
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                for buf in (m.running_mean, m.running_var):
                    self.dist.all_reduce_sum(buf.data)
                    buf.data /= self.dist.world

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
            from tqdm import tqdm  # heavy

            tqdm.write(f"zeroseg train: {msg}", file=sys.stderr)

    def _run(self) -> dict:
        cfg, d = self.cfg, self.dist
        resumed = self.resume_state is not None
        log = tb = None
        if d.main:
            write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
            log = CsvLog(self.out / "log.csv", self.global_step if resumed else None,
                         [f if f != "val_seen_miou" else self.METRIC for f in LOG_FIELDS])
            if cfg["tensorboard"]:
                try:
                    from torch.utils.tensorboard import SummaryWriter  # optional

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
