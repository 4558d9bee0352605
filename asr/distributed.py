"""torch.distributed set-up for runs under `torchrun` (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from asr.errors import AsrError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0  # global rank
    world_size: int = 1  # number of processes in the job
    local_rank: int = 0  # rank on this node (picks the GPU)
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what a device name may start with


def resolve_device(name: str, local_rank: int = 0, what: str = "device") -> torch.device:
    """'auto' -> this rank's GPU when CUDA is available, else CPU; other names as given.

    A name torch does not know, CUDA on a machine without it, and a rank with no GPU of its own
    (more processes per node than GPUs) are AsrErrors naming `what` (the option, e.g.
    "--device"), rather than torch's errors from deep inside the first transfer."""
    if name == "auto":
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            device = None
        if device is None or device.type not in DEVICE_TYPES:
            raise AsrError(f"{what} {name!r}: not a device here; use auto, cpu, cuda or cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise AsrError(f"{what} {name!r}: CUDA is not available on this machine; use cpu (or auto)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise AsrError(f"{what} {name!r}: MPS is not available on this machine; use cpu (or auto)")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    visible = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else None
    if visible is not None and device.index >= visible:
        raise AsrError(f"device {name!r}: this process (local rank {local_rank}) would use cuda:{device.index}, "
                       f"but only {visible} CUDA device(s) are visible; start at most that "
                       "many processes per node (torchrun --nproc-per-node) or set train.device=cpu")
    return device


def setup(device_name: str = "auto", what: str = "device") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, what)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
