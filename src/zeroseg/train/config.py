"""Training configs: YAML defaults <- a resumed run's config <- a YAML file <- ``key=value``
overrides, with one-line errors for unknown keys and wrong types."""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ZerosegError
from . import losses
from .state import read_state

__all__ = ["default_config", "load_config", "parse_override", "resolve_config", "validate_config",
           "check_common_config", "check_held_out_config"]


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
    for key in ("vocabulary_images", "vocabulary_negatives"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ZerosegError(f"{key} must be an integer >= 0, not {v!r}")
    pb = cfg["pretrained_backbone"]
    if pb is not None and (not isinstance(pb, str) or not pb.strip()):
        raise ZerosegError("pretrained_backbone must be a tag (e.g. imagenet) or a weights file path")
    if pb and cfg["init_from"]:
        raise ZerosegError("pretrained_backbone and init_from exclude each other (init_from loads every weight)")
    losses.check_loss_config(cfg)


def _plain(obj: Any) -> Any:
    """Config values as plain containers (for YAML and ``weights_only`` states)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def resolve_config(cfg: dict | None, resume: str | dict | None = None, defaults: str = "default.yaml") -> dict:
    """The config a run uses: defaults <- the resumed run's config (``resume``: its directory,
    state.pt or state) <- ``cfg``. A partial ``cfg`` is fine; unknown keys are errors. Python's
    ``train(cfg, resume=d)`` and ``zeroseg train --resume d`` (whose ``cfg`` already holds the
    run's config) resolve the same way."""
    base = default_config(defaults)
    if resume is not None:
        state = read_state(resume) if not isinstance(resume, dict) else resume
        base = _merge(base, state["config"], "the resumed run's config")
    return _plain(_merge(base, cfg or {}, "the config"))
