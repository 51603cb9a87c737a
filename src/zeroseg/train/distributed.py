"""The process group of a (torchrun) training run: world size, rank, device."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import ZerosegError

__all__ = ["Dist"]


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
