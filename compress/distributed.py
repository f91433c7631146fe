"""`torchrun --nproc_per_node=N`: one process per rank, the one `fit` loop under
DistributedDataParallel (gloo on CPU, NCCL on CUDA; `--device` chooses).

Every rank runs the same command: it loads the model and the teacher, does the steps that build
the torch model (prune, synthesize, distill, qat: seeded, so every rank builds the same model),
and trains its share of every batch. Only rank 0 writes (the run folder, its lock, the
checkpoints, the report) and runs the steps that write or time ONNX; the other ranks skip those,
print nothing and wait for rank 0 at a barrier at the end.

Data: every rank draws the same seeded global batch and trains on its own equal slice of it
(`shard`), so DDP's average of the ranks' gradients is the gradient of the whole batch: the same
global batch gives the 1-process run's updates (up to the order of float sums). BatchNorm layers
normalise over each rank's slice (DDP without SyncBatchNorm, which needs CUDA), so models with
BatchNorm train close to, not exactly like, the 1-process run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compress.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress.data.specs import Dataset

# torchrun's variables for each worker.
RANK_ENV, WORLD_ENV, LOCAL_RANK_ENV = "RANK", "WORLD_SIZE", "LOCAL_RANK"
# Ranks other than 0 wait at collectives while rank 0 exports, benches and writes the report.
WAIT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> World:
    """This process's place as torchrun announced it in the environment (1 process without it)."""
    def number(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        return int(value) if value.isdigit() else default

    return World(number(RANK_ENV, 0), number(WORLD_ENV, 1), number(LOCAL_RANK_ENV, 0))


def current() -> World:
    """The process group this process is in (1 process when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), launched().local_rank)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the block (gloo on CPU, NCCL on CUDA, each rank on its
    own GPU), or do nothing in a single process or when the caller already joined one."""
    import torch
    import torch.distributed as dist

    world = launched()
    if not world.distributed or dist.is_initialized():
        yield current() if world.distributed else world
        return
    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError("torchrun --nproc_per_node", world.size, f"is more than the {torch.cuda.device_count()} CUDA devices here; one process per GPU")
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=WAIT)
    try:
        yield world
        dist.barrier()  # the other ranks wait here until rank 0 has written the run folder
    finally:
        dist.destroy_process_group()


def rank_device(device: str, world: World) -> str:
    """The device of this rank: its own GPU under torchrun."""
    return f"cuda:{world.local_rank}" if device == "cuda" and world.distributed else device


def rows_per_rank(batch_rows: int, world: World) -> int:
    """Each rank's share of a global batch of `batch_rows`: equal, and at least one row, so that
    the ranks' averaged gradients are the whole batch's."""
    if batch_rows < world.size:
        raise UsageError("torchrun --nproc_per_node", world.size, f"is more processes than the {batch_rows} rows of each training batch "
                         f"(each process trains on an equal share of every batch); use at most {batch_rows} processes or a larger --batch-size")
    if batch_rows % world.size:
        raise UsageError("torchrun --nproc_per_node", world.size, f"does not divide the {batch_rows} rows of each training batch "
                         f"(each process trains on an equal share of every batch); use a --batch-size that is a multiple of {world.size}")
    return batch_rows // world.size


def shard(batch: Dataset, world: World) -> Dataset:
    """This rank's slice of a global batch."""
    import torch

    per_rank = len(batch) // world.size
    return batch.take(torch.arange(world.rank * per_rank, (world.rank + 1) * per_rank))


def wrap(student: nn.Module, device: torch.device) -> nn.Module:
    """The student in DistributedDataParallel: rank 0's weights are broadcast to every rank here,
    and the gradients averaged in every backward. `static_graph`: every step runs the same graph,
    which lets DDP handle weights the output never uses (a sentence encoder's pooler) without
    `find_unused_parameters`' search of the graph at every step."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student, device_ids=[device.index or 0] if device.type == "cuda" else None, static_graph=True)


def average_gradients(params: list[nn.Parameter], world: World) -> None:
    """Average what DDP does not: the gradients of a loss module's own weights (KD projections)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world.size


def mean_over_ranks(value: torch.Tensor, world: World) -> torch.Tensor:
    """The ranks' mean of a scalar (the loss: the whole batch's, and NaN on every rank when one
    rank's is, so all ranks stop together)."""
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world.size


def from_main(value: float, device: torch.device) -> float:
    """Rank 0's figure on every rank (the held-out metric, measured on rank 0 only), so that every
    rank keeps the same best state."""
    import torch
    import torch.distributed as dist

    box = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(box, 0)
    return float(box.item())


def check_same_student(student: nn.Module, world: World) -> None:
    """Every rank must start a fit from a student of rank 0's shapes (DDP then copies rank 0's
    weights): a step that timed the machine (a latency-driven prune) may decide differently."""
    import torch.distributed as dist

    from compress.errors import RunFailed

    shapes = [(name, tuple(tensor.shape)) for name, tensor in student.state_dict().items()]
    every = [None] * world.size
    dist.all_gather_object(every, shapes)
    other = next((rank for rank, theirs in enumerate(every) if theirs != every[0]), None)
    if other is not None:
        raise RunFailed(f"rank {other} built a student of other shapes than rank 0 before this fit (a step that times the machine, "
                        "like a latency-driven prune, decides on each rank); run that step without torchrun and distill its saved model")


def sync_from_main(module: nn.Module) -> None:
    """Every rank ends with rank 0's weights and buffers (BatchNorm statistics move on each rank)."""
    import torch.distributed as dist

    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, 0)
