"""The one fit loop in 2 processes (gloo, forked here rather than started by torchrun, to stay
fast): each trains its half of every batch, and the result is the 1-process run's."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.distributed import World, rows_per_rank, shard
from compress.errors import UsageError
from compress.train import Checkpointing, FitConfig, fit

CONFIG = FitConfig(steps=30, lr=1e-2, batch_size=32, warmup_steps=5, eval_every=10)


def _data() -> Dataset:
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    return Dataset("regression", (x,), x @ torch.tensor([[1.5, -2.0, 0.5, 3.0]]).T)


class _ScaledMSE(nn.Module):
    """A loss with a weight of its own (like KD's projections), which DDP does not average."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        return F.mse_loss(self.scale * student(*batch.inputs), batch.labels)


def _train(checkpoint=None) -> tuple[dict[str, torch.Tensor], list]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))  # no dropout, no BatchNorm
    data = _data()
    loss = _ScaledMSE()
    evaluate = lambda module: -F.mse_loss(module(*data.inputs), data.labels).item()  # noqa: E731
    result = fit(student, loss, data, CONFIG, evaluate=evaluate, seed=5, checkpointing=checkpoint)
    return {**student.state_dict(), "scale": loss.scale.detach().clone()}, [(p.step, p.loss, p.metric) for p in result.history]


def _rank(rank: int, folder: Path) -> None:
    """One forked rank; what it trained (or its traceback) goes to a file: tensors sent through a
    queue would outlive the process that shares them."""
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", store=dist.FileStore(str(folder / "store"), 2), rank=rank, world_size=2)
        torch.save(_train(Checkpointing(folder / "fit.pt", every=10)), folder / f"rank{rank}.pt")
        dist.destroy_process_group()
    except BaseException:
        (folder / f"rank{rank}.txt").write_text(traceback.format_exc())


def test_two_processes_train_like_one(tmp_path):
    expected_state, expected_history = _train()
    fork = multiprocessing.get_context("fork")
    ranks = [fork.Process(target=_rank, args=(rank, tmp_path)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    for rank in (0, 1):
        assert not (tmp_path / f"rank{rank}.txt").exists(), (tmp_path / f"rank{rank}.txt").read_text()
        state, history = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key, value in expected_state.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")
        assert [step for step, _, _ in history] == [step for step, _, _ in expected_history]
        assert [loss for _, loss, _ in history[1:]] == pytest.approx([loss for _, loss, _ in expected_history[1:]], rel=1e-5)
        assert [m for _, _, m in history] == pytest.approx([m for _, _, m in expected_history], rel=1e-5)
    assert torch.load(tmp_path / "fit.pt", weights_only=True)["step"] == 30  # rank 0 wrote it, once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt", "rank0.pt", "rank1.pt"]


def test_every_rank_gets_an_equal_share_of_each_batch():
    batch = Dataset("b", (torch.arange(8).unsqueeze(1),), torch.arange(8))
    assert shard(batch, World(1, 4)).labels.tolist() == [2, 3]
    assert rows_per_rank(32, World(0, 4)) == 8
    with pytest.raises(UsageError, match="torchrun --nproc_per_node: 4: is more processes than the 2 rows of each training batch"):
        rows_per_rank(2, World(0, 4))
    with pytest.raises(UsageError, match="does not divide the 30 rows .* a --batch-size that is a multiple of 4"):
        rows_per_rank(30, World(0, 4))
