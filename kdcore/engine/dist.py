"""Data-parallel training under ``torchrun``: the process group, the device and each rank's share of a batch.

Every rank draws the same global batch and takes its own slice of it (:meth:`DistEnv.shard`); gradients are
averaged by DistributedDataParallel (gloo on CPU, nccl on CUDA), logged values by :meth:`DistEnv.mean`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    """This process's rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's slice of a global batch of ``n`` items (``n // world`` each)."""
        share = n // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel when there is more than one process, else itself."""
        if self.world == 1:
            return module
        ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average of ``values`` over the ranks (in place; unchanged in one process)."""
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        return values


def default_device() -> str:
    """``"cuda"`` where a CUDA GPU is present, else ``"cpu"``: the device of any run not told otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def dist_env(device: str | None = None) -> DistEnv:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = default_device()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest convolutions
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return DistEnv(dist.get_rank(), world, dev)
    return DistEnv(0, 1, dev)
