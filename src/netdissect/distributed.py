"""Splitting a dissection across processes with torch.distributed (torchrun).

Every statistic is a sum or an exact order statistic, so each rank computes partial
statistics on its own share of the images and the shares are merged exactly: int64 counts
are summed, quantile buffers and top-image lists are gathered and merged in rank order.
Without a process group (a plain run) every function here is the identity.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from netdissect.stats import IoUTally, TopImages, TopQuantile


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
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _comm_device(t: torch.Tensor) -> torch.device:
    return t.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    t = t.to(_comm_device(t)).contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return parts


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over all ranks (exact for integer tensors)."""
    if not dist.is_initialized():
        return t
    moved = t.to(_comm_device(t)).contiguous()
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(t.device)


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def merged_quantile(local: TopQuantile) -> TopQuantile:
    """A TopQuantile holding every rank's values (buffers padded with -inf to a common width)."""
    if not dist.is_initialized():
        return local
    state = local.state_dict()
    padded = torch.full((local.units, local.m), -math.inf)
    padded[:, :state["values"].shape[1]] = state["values"]
    merged = TopQuantile(local.units, local.q, local.capacity_count, local.pool.device)
    for count, values in zip(gather_objects(state["count"]), _all_gather(padded)):
        part = TopQuantile(local.units, local.q, local.capacity_count)
        part.load_state_dict({**state, "count": count, "values": values.cpu()})
        merged.merge(part)
    return merged


def merged_top(local: TopImages) -> TopImages:
    """Every rank's top images merged (ties broken by image index, as in one process)."""
    if not dist.is_initialized():
        return local
    merged = TopImages(local.units, local.k, local.values.device)
    for values, indices in zip(_all_gather(local.values), _all_gather(local.indices)):
        other = TopImages(local.units, local.k, "cpu")
        other.values, other.indices = values, indices
        merged.merge(other)
    return merged


def summed_tally(local: IoUTally) -> IoUTally:
    """Every rank's tally summed in place."""
    if dist.is_initialized():
        local.intersection = all_sum(local.intersection)
        local.activation = {d: all_sum(a) for d, a in local.activation.items()}
        local.truth = all_sum(local.truth)
        local.images = sum(gather_objects(local.images))
    return local
