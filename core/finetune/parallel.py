"""Fine-tuning across processes: data parallelism (DDP) launched with torchrun, on the gloo backend on CPUs and
NCCL on GPUs.

A run with ``processes > 1`` is ``python -m torch.distributed.run --standalone --nproc-per-node N -m core finetune
…``: every rank builds the same model from the same seed, takes its share of each *global* batch (rows
``rank, rank + N, …`` of the batch a single process would take), and scales its loss so that the gradient DDP
averages is the gradient of the whole batch's mean loss — the same step as one process with the same global batch.
Rank 0 alone evaluates, saves checkpoints, writes progress and the final model; a stop (Cancel's SIGTERM reaches
every rank of the process group, or the time limit) is agreed by all ranks at the same step, so the checkpoint is
whole and no rank waits on another forever.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from core.lazy import lazy

torch = lazy("torch")


def launch_command(argv: list[str], processes: int) -> list[str]:
    """The command that runs ``python -m core finetune ARGV`` on ``processes`` ranks (one process: itself)."""
    if processes <= 1:
        return [sys.executable, "-m", "core", "finetune", *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "core", "finetune", *argv]


def launched() -> bool:
    """Whether this process is one rank of a torchrun launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Ranks:
    """This process's place in the run: rank ``rank`` of ``world`` (a single process: 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def shard(self, index: list[int]) -> list[int]:
        """This rank's rows of a global batch."""
        return index[self.rank::self.world] if self.parallel else index

    def total(self, value: float) -> float:
        """The sum of ``value`` over the ranks."""
        if not self.parallel:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0])

    def anyone(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop every rank takes at the same step)."""
        return self.total(1.0 if flag else 0.0) > 0 if self.parallel else flag

    def barrier(self) -> None:
        if self.parallel:
            torch.distributed.barrier()

    def wrap(self, model, device):
        """The model as DDP trains it (parameters and buffers broadcast from rank 0 at the start)."""
        if not self.parallel:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.parallel and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def join(device_kind: str) -> Ranks:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); a single process: Ranks(0, 1)."""
    if not launched():
        return Ranks()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())


def local_device(device, ranks: Ranks):
    """Each rank on its own GPU (LOCAL_RANK); on the CPU they share it."""
    if ranks.parallel and device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device
