"""Collectives for state that lives outside the DDP-wrapped model (codebook statistics, the
FactorVAE discriminator): no-ops unless a process group of more than one rank is running."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group; 1 without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_(*tensors: torch.Tensor, average: bool = False) -> None:
    """In place: each tensor becomes its sum (``average``: its mean) over the ranks."""
    n = world_size()
    if n == 1:
        return
    for t in tensors:
        dist.all_reduce(t)
        if average:
            t.div_(n)


def broadcast_(*tensors: torch.Tensor, src: int = 0) -> None:
    """In place: each tensor becomes rank ``src``'s copy."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.broadcast(t, src)
