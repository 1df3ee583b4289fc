"""Many processes, one run: DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node=N -m octlens train ...`` starts N copies of the command; each finds
its rank, world size and local rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), joins one process group (NCCL between CUDA GPUs, gloo on CPUs) and trains its
share of every batch. Without torchrun, the same code runs as one process with no group at all.

The choices that keep a run of N processes the *same experiment* as a run of one:

- ``--batch-size`` is the global batch. Each step's global batch (the same seeded order as one
  process would draw) is cut into N contiguous slices of ``batch_size / N``, one per rank, and
  DDP averages the gradients, so the step is the single process's step up to rounding.
- Augmentation is seeded per sample from ``(seed, epoch, position)``, so a scan is augmented
  the same way whichever rank or data worker loads it.
- BatchNorm normalizes with each rank's own slice while training (SyncBatchNorm runs only on
  GPUs, and costs one collective per layer per step); the running statistics are averaged over
  the ranks after every epoch, so evaluation and the saved model use statistics of all shards.
- Validation is split between the ranks and the logits gathered, so every rank computes the same
  validation loss and takes the same early-stopping decision.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn

from octlens.errors import OctlensError, arg

# How long a rank waits at a collective before giving up on its peers.
_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and prints; the other ranks only compute."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if not (self.active and device.type == "cuda"):
            return device
        if device.index is not None:
            raise OctlensError(
                f"{arg('device')} {device}: under torchrun each process takes the GPU of its local "
                f"rank; give {arg('device')} cuda (choose GPUs with CUDA_VISIBLE_DEVICES)"
            )
        return torch.device("cuda", self.local_rank)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over the ranks."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (rows may differ in number) concatenated in rank order."""
        if not self.active:
            return tensor
        local = tensor.to(self._comm_device)
        counts = [
            torch.zeros(1, dtype=torch.int64, device=self._comm_device)
            for _ in range(self.world_size)
        ]
        dist.all_gather(counts, torch.tensor([len(local)], device=self._comm_device))
        longest = int(max(c.item() for c in counts))
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        rows = [part[: int(count.item())] for part, count in zip(gathered, counts, strict=True)]
        return torch.cat(rows).to(tensor.device)

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm's running mean and variance) over ranks."""
        if not self.active:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.world_size

    @property
    def _comm_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def from_environment() -> ProcessGroup:
    """The process group torchrun's environment describes (one process when there is none)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise OctlensError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them)"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise OctlensError(f"RANK {rank} is not a rank of a job of WORLD_SIZE {world_size}")
    return ProcessGroup(rank, world_size, local_rank)


@contextlib.contextmanager
def joined(group: ProcessGroup, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the block (nothing to join for one process).

    SIGTERM, which torchrun sends to the surviving ranks when one of them fails, is raised as
    :class:`Stopped` (a KeyboardInterrupt) inside the block, so a rank stops the way Ctrl-C
    stops it: saying which epochs are saved, never half-way through a checkpoint (writes are
    atomic).
    """
    if not group.active or dist.is_initialized():
        yield
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:  # e.g. a scheduler's WORLD_SIZE left in the shell of a plain `octlens train`
        raise OctlensError(
            f"WORLD_SIZE={group.world_size} is set but {' and '.join(missing)} not: start the "
            "job with torchrun, or unset WORLD_SIZE to train in one process"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, timeout=_TIMEOUT, device_id=device if backend == "nccl" else None
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


class Stopped(KeyboardInterrupt):
    """SIGTERM reached a rank: torchrun is stopping the job."""


def _interrupt(signum: int, frame: object) -> None:
    raise Stopped


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` says another rank of the job has gone (crashed, killed, unreachable).

    NCCL raises :class:`torch.distributed.DistError`; gloo a plain RuntimeError naming its
    closed or reset connection.
    """
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(
        sign in str(error) for sign in ("Connection closed by peer", "Connection reset by peer")
    )


def shard_order(
    order: Sequence[int], batch_size: int, group: ProcessGroup, drop_last: bool
) -> list[int]:
    """This rank's positions of an epoch's ``order``, as its batches of ``batch_size / N``.

    Global batch ``k`` is ``order[k*B:(k+1)*B]``; rank ``r`` takes slice ``r`` of it. One process
    takes ``order`` itself (less a last, partial batch when ``drop_last``); several drop the
    partial batch always, since every rank must take the same number of steps.
    """
    steps = len(order) // batch_size
    if not group.active:
        return list(order[: steps * batch_size] if drop_last and steps else order)
    per_rank = batch_size // group.world_size
    mine: list[int] = []
    for step in range(steps):
        start = step * batch_size + group.rank * per_rank
        mine.extend(order[start : start + per_rank])
    return mine


def check_batch(batch_size: int, train_images: int, val_images: int, group: ProcessGroup) -> None:
    """A global batch that N ranks can share evenly, data for at least one such batch, and a
    validation scan for every rank."""
    if not group.active:
        return
    if batch_size % group.world_size:
        raise OctlensError(
            f"{arg('batch_size')} {batch_size} (the global batch) does not divide among "
            f"{group.world_size} processes; use a multiple of {group.world_size}"
        )
    if train_images < batch_size:
        raise OctlensError(
            f"{train_images} training images are fewer than one global batch of {batch_size} "
            f"for {group.world_size} processes; lower {arg('batch_size')}"
        )
    if val_images < group.world_size:
        raise OctlensError(
            f"{val_images} validation images cannot be shared by {group.world_size} processes; "
            "give more, or use fewer processes"
        )
