"""Splitting a dissection across processes with torch.distributed (torchrun).

Each rank computes its statistics on its own contiguous share of the images (`World.shard`);
`merge_across_ranks(stat)` gathers every rank's `state_dict()` and merges them in rank order
into a new statistic, leaving the rank's own share as it was (it is what a saved state holds).
Every statistic is an int64 sum or an exact order statistic, so the merge is exact and the
result bit-identical to one process.  Without a process group every function is the identity.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "init_world", "gather_objects", "merge_across_ranks"]


@dataclass
class World:
    """This process's place among the processes of one dissection."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> range:
        """The contiguous share of `count` items that this rank processes (each item once)."""
        return range(self.rank * count // self.size, (self.rank + 1) * count // self.size)


def init_world(device: torch.device | None = None) -> World:
    """Join the process group that torchrun describes in the environment, if any.

    NCCL is used when the processes run on CUDA devices, gloo on CPUs.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not dist.is_initialized():
        return World()
    if not dist.is_initialized():
        cuda = (device is None or device.type == "cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_objects(value) -> list:
    """Every rank's `value` (picklable), in rank order."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def merge_across_ranks(stat):
    """A statistic holding every rank's share of `stat` (any object with `merge`,
    `state_dict` and `load_state_dict`); `stat` itself is left unchanged.  Without a process
    group, `stat` itself."""
    if not dist.is_initialized():
        return stat
    parts = gather_objects(stat.state_dict())
    merged = copy.deepcopy(stat)
    merged.load_state_dict(parts[0])
    for part in parts[1:]:
        other = copy.deepcopy(stat)
        other.load_state_dict(part)
        merged.merge(other)
    return merged
