"""torchrun / DDP helpers: NCCL on CUDA, gloo on CPU; single process when not launched by torchrun."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    from rsd_deploy.errors import BackendUnavailableError

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError("device cuda requested but CUDA is not available; use device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested != "cpu":
        raise BackendUnavailableError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Initialise the process group when WORLD_SIZE > 1 (set by torchrun); else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        logger.info("DDP initialised: rank %d/%d, backend %s, device %s", rank, world, backend, device)
    return DistInfo(rank, local_rank, world, device)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def _group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def any_rank(flag: bool, device: torch.device = torch.device("cpu")) -> bool:
    """True on every rank when ``flag`` is true on at least one (all ranks then take the same branch)."""
    if _group_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a decision rank 0 made, e.g. the run folder)."""
    if _group_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> Optional[List[Any]]:
    """Every rank's ``obj`` as a list on rank 0 (None on the other ranks); ``[obj]`` in one process."""
    if _group_size() == 1:
        return [obj]
    out: Optional[List[Any]] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
