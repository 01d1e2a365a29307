"""Process-group set-up for data-parallel training launched by ``torchrun``.

``torchrun --nproc-per-node N $(which m2f-bench) train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; a plain ``m2f-bench train``
sets none of them and runs as the single rank 0 without a process group. CUDA ranks use
NCCL, CPU ranks gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from m2f_bench.errors import M2FError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this rank writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, or ``auto`` (CUDA when present, else CPU).

    Raises:
        M2FError: CUDA was asked for and is not available.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise M2FError(f"unknown device {device!r}; choose cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise M2FError("--device cuda, but CUDA is not available")
    return torch.device(device)


def init_distributed(device: str) -> DistContext:
    """Join the process group ``torchrun`` describes, or run alone without one.

    Args:
        device: ``cpu``, ``cuda`` or ``auto``.
    """
    kind = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(0, 1, kind)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind.type == "cuda":
        torch.cuda.set_device(local_rank)
        kind = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), kind)


def wrap(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Wrap a module in DistributedDataParallel when there is more than one rank."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


def mean_over_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Average a tensor over ranks (for logging the global batch's losses)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """Whether ``flag`` is true on any rank (so every rank stops together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shutdown(ctx: DistContext, *, finished: bool = False) -> None:
    """Leave the process group, if this process joined one.

    Args:
        finished: The run ended normally on this rank: wait for every rank first. A rank
            that tears down its gloo connections while rank 0 is still validating and
            saving the last checkpoint can abort ("terminate called without an active
            exception"); after a failure nobody waits (torchrun stops the other ranks).
    """
    if ctx.distributed and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
