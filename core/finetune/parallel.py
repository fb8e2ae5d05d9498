"""Fine-tuning across processes: data parallelism (DDP), or fully sharded (FSDP) for a model whose weights,
gradients and optimiser state do not fit one device; launched with torchrun, on the gloo backend on CPUs and NCCL
on GPUs.

A run with ``processes > 1`` is ``python -m torch.distributed.run --standalone --nproc-per-node N -m core finetune
…``: every rank builds the same model from the same seed, takes its share of each *global* batch (rows
``rank, rank + N, …`` of the batch a single process would take), and scales its loss so that the gradient DDP
averages is the gradient of the whole batch's mean loss — the same step as one process with the same global batch.
Rank 0 alone evaluates, saves checkpoints, writes progress and the final model; a stop (Cancel's SIGTERM reaches
every rank of the process group, or the time limit) is agreed by all ranks at the same step, so the checkpoint is
whole and no rank waits on another forever.

FSDP (``parallel="fsdp"``, torch's ``fully_shard``: each decoder block and the whole model) keeps 1/N of every
parameter, gradient and optimiser state on each rank. Rank 0 also keeps a copy of the model in CPU memory: at each
evaluation and checkpoint every rank gathers the full weights into it (a collective) and rank 0 evaluates and saves
that copy, so the held-out set runs once and the saved folders are the same as a one-process run's.
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
    sharded: bool = False   # FSDP: parameters, gradients and optimiser state split across the ranks

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
        """The model as DDP trains it (parameters and buffers broadcast from rank 0 at the start); with FSDP the
        model itself, sharded in place (each decoder block a unit, then the rest)."""
        if not self.parallel:
            return model
        if self.sharded:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
            mesh = init_device_mesh(device.type, (self.world,))
            base = getattr(model, "get_base_model", lambda: model)()
            blocks = set(getattr(base, "_no_split_modules", None) or ())
            for module in model.modules():
                if type(module).__name__ in blocks:
                    fully_shard(module, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.parallel and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def join(device_kind: str, how: str = "ddp") -> Ranks:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); a single process: Ranks(0, 1)."""
    if not launched():
        return Ranks()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size(), how == "fsdp")


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_into(model, copy) -> None:
    """Every rank: gather the sharded model's full weights; rank 0 loads them into ``copy`` (its CPU model)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    full = get_model_state_dict(model, options=_full_options())
    if copy is not None:
        copy.load_state_dict(full)


def full_optimizer_state(model, optimizer) -> dict:
    """Every rank: the optimiser's whole state, gathered (rank 0 gets it; parameters named, not numbered)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Every rank: a gathered optimiser state put back, each rank keeping its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def local_device(device, ranks: Ranks):
    """Each rank on its own GPU (LOCAL_RANK); on the CPU they share it."""
    if ranks.parallel and device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device
