"""DistributedDataParallel helpers: one process per device, started by ``torchrun``.

``torchrun --nproc-per-node N -m segtrain run ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in every process; without them the run is a plain single process and every
helper here is a no-op. The backend is NCCL on CUDA and gloo on CPU (which is how the tests
run two processes on a machine without a GPU).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from the torchrun environment (a single process without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise SegtrainError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (set by torchrun)") from None
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def setup(device_type: str) -> DistInfo:
    """Join the process group when started by torchrun; returns this process's place in it.

    ``device_type`` is ``"cuda"`` or ``"cpu"`` and picks NCCL or gloo. On CUDA each process
    takes the GPU numbered by its local rank.
    """
    info = env_info()
    if not info.enabled:
        return info
    if device_type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise SegtrainError(f"local rank {info.local_rank} has no GPU: {torch.cuda.device_count()} "
                                f"visible; start torchrun with --nproc-per-node <= the GPU count")
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        # A generous timeout: rank 0 alone writes checkpoints and plots while others wait.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
        log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)
    return info


def cleanup(ok: bool = True) -> None:
    """Leave the process group. After a normal end every rank meets at a barrier first, so no
    rank tears its connections down while a peer still talks to it (gloo then aborts the
    process at exit); after an error the peers may never arrive, so no barrier."""
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (and returned); unchanged in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (batch-norm running statistics) to every rank.

    DDP keeps parameters identical, but each rank updates its batch-norm statistics with its
    own last batch; syncing them before validation makes every rank score the same model as
    the one rank 0 saves.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def params_in_sync(module: torch.nn.Module) -> bool:
    """True when every rank holds exactly the same parameters (always in a single process).

    Compares a float64 checksum per parameter tensor; DDP should guarantee this, and a
    mismatch means the ranks trained different models.
    """
    if not is_distributed():
        return True
    with torch.no_grad():
        sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))
