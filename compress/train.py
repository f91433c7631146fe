"""`fit`: the one training loop. KD recovery, QAT and any later fine-tuning call it.

One loop, readable top to bottom (nanoGPT's `train.py` habit): AdamW, a linear warm-up then a
cosine decay to `min_lr_ratio` of the peak rate, gradient-norm clipping, a held-out evaluation
every `eval_every` steps that keeps the best state, and one progress line per evaluation. The
loop owns no data format and no loss: it asks `data` for shuffled batches and `loss_fn` for a
scalar loss.

Determinism: the data order comes from `seed` (epoch e is shuffled with `seed + e`), and the global
torch RNG (dropout) is seeded from `seed` inside `torch.random.fork_rng`, so the caller's RNG state
is the same after `fit` as before, and two fits with the same seed give the same weights.

Built to be extended, not rewritten: the step counter drives everything (learning rate, the data
position, evaluation), so resuming at step k only has to restore the optimizer, the schedule, the
RNG state and the best state, then ask `_batches` for the stream from step k.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError


class BatchSource(Protocol):
    """Anything that gives batches the way `Dataset.batches` does (real data, a synthetic set)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Dataset]: ...


# loss_fn(student, batch) -> scalar loss. The student is passed in (rather than closed over) so
# that the loop can hand over a wrapped module (DistributedDataParallel) without the loss knowing.
LossFn = Callable[[nn.Module, Dataset], torch.Tensor]
# evaluate(student) -> a held-out figure where higher is better (accuracy, cosine); called in eval mode.
Evaluate = Callable[[nn.Module], float]


@dataclass(frozen=True)
class FitConfig:
    steps: int  # optimizer steps in all
    lr: float  # peak AdamW learning rate, reached after the warm-up
    batch_size: int
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio (nanoGPT: lr / 10)
    weight_decay: float = 0.0  # AdamW decoupled weight decay; 0 for KD recovery of trained weights
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_every: int = 0  # steps between held-out evaluations and progress lines; 0: only at the end

    def __post_init__(self) -> None:
        problems = [f"{name} {getattr(self, name)} (must be {rule})" for name, bad, rule in (
            ("steps", self.steps < 1, ">= 1"), ("lr", not self.lr > 0, "> 0"), ("batch_size", self.batch_size < 1, ">= 1"),
            ("warmup_steps", not 0 <= self.warmup_steps <= self.steps, "in [0, steps]"),
            ("min_lr_ratio", not 0 <= self.min_lr_ratio <= 1, "in [0, 1]"), ("weight_decay", self.weight_decay < 0, ">= 0"),
            ("grad_clip", self.grad_clip < 0, ">= 0"), ("eval_every", self.eval_every < 0, ">= 0"),
        ) if bad]
        if problems:
            raise UsageError("fit settings", "; ".join(problems), "fix these settings")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based): linear warm-up, then cosine decay."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        ratio = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * ratio


@dataclass(frozen=True)
class FitPoint:
    step: int
    loss: float | None  # mean training loss over the steps since the previous point (None at step 0)
    metric: float | None  # held-out figure at this step (None without `evaluate`)


@dataclass(frozen=True)
class FitResult:
    history: tuple[FitPoint, ...]
    best_step: int  # the step whose state the student holds after `fit` (the last one without `evaluate`)
    best_metric: float | None
    final_metric: float | None  # the held-out figure of the last step, before the best state is restored
    loss_start: float  # the first step's training loss
    loss_end: float  # the mean training loss over the last reporting interval
    steps: int
    seconds: float


def fit(
    student: nn.Module,
    loss_fn: LossFn,
    data: BatchSource,
    config: FitConfig,
    *,
    evaluate: Evaluate | None = None,
    log: Callable[[str], None] = lambda _: None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train `student` in place to lower `loss_fn` on batches of `data`; return the curve.

    If `loss_fn` is an `nn.Module` (a KD loss with learned projections), its trainable parameters
    are trained too. With `evaluate`, the student is measured before the first step and every
    `eval_every` steps, and ends holding the best state seen (the starting state included, so fit
    never hands back a student worse on that figure than the one it was given). The student ends in
    eval mode on `device`.
    """
    if len(data) == 0:
        raise UsageError("training data", "0 rows", "give data with at least one batch")
    student.to(device)
    params = _trainable(student) + (_trainable(loss_fn) if isinstance(loss_fn, nn.Module) else [])
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    if not params:
        raise UsageError("model", "no trainable parameters", "unfreeze the student before training it")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # LambdaLR multiplies the peak rate; its state (last step) goes into a checkpoint as is.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_at(step) / config.lr)
    eval_every = config.eval_every or config.steps
    history: list[FitPoint] = []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=_accelerators(device)):
        torch.manual_seed(seed)
        best = _Best.at_start(student, evaluate, history)
        interval_loss, interval_steps, loss_start = 0.0, 0, float("nan")
        for step, batch in zip(range(config.steps), _batches(data, config.batch_size, seed, start_step=0)):
            student.train()
            loss = loss_fn(student, _to(batch, device))
            if not torch.isfinite(loss):
                raise RunFailed(f"training loss became {loss.item()} at step {step + 1} of {config.steps}; lower the learning rate (now {config.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            schedule.step()
            value = loss.item()
            loss_start = value if step == 0 else loss_start
            interval_loss, interval_steps = interval_loss + value, interval_steps + 1
            done = step + 1
            if done % eval_every == 0 or done == config.steps:
                metric = _measure(student, evaluate)
                history.append(FitPoint(done, interval_loss / interval_steps, metric))
                best.offer(student, done, metric)
                log(_progress_line(history[-1], config, optimizer, started))
                interval_loss, interval_steps = 0.0, 0
    final_metric = history[-1].metric
    best.restore(student)
    student.eval()
    return FitResult(
        history=tuple(history), best_step=best.step, best_metric=best.metric, final_metric=final_metric,
        loss_start=loss_start, loss_end=history[-1].loss, steps=config.steps, seconds=time.perf_counter() - started,
    )


@dataclass
class _Best:
    """The best held-out state so far, kept as a detached copy of the state dict."""

    step: int
    metric: float | None
    state: dict[str, torch.Tensor] | None

    @classmethod
    def at_start(cls, student: nn.Module, evaluate: Evaluate | None, history: list[FitPoint]) -> _Best:
        if evaluate is None:
            return cls(0, None, None)
        metric = _measure(student, evaluate)
        history.append(FitPoint(0, None, metric))
        return cls(0, metric, _snapshot(student))

    def offer(self, student: nn.Module, step: int, metric: float | None) -> None:
        if metric is None:
            self.step = step  # without evaluation the last state is the result
        elif self.metric is None or metric > self.metric:
            self.step, self.metric, self.state = step, metric, _snapshot(student)

    def restore(self, student: nn.Module) -> None:
        if self.state is not None:
            student.load_state_dict(self.state)


def _batches(data: BatchSource, batch_size: int, seed: int, start_step: int) -> Iterator[Dataset]:
    """Endless shuffled batches, epoch after epoch; the stream from `start_step` on is the same as
    the one a run from step 0 reaches there. A last batch smaller than `batch_size` is dropped
    (a batch of one breaks BatchNorm in training mode), unless the data is smaller than one batch."""
    rows = len(data)
    size = min(batch_size, rows)
    per_epoch = rows // size
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        stream = data.batches(size, shuffle=True, seed=seed + epoch)
        for index, batch in enumerate(stream):
            if index >= per_epoch:
                break
            if index >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


@torch.no_grad()
def _measure(student: nn.Module, evaluate: Evaluate | None) -> float | None:
    if evaluate is None:
        return None
    student.eval()
    return float(evaluate(student))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _to(batch: Dataset, device: str | torch.device) -> Dataset:
    if torch.device(device).type == "cpu":
        return batch
    labels = None if batch.labels is None else batch.labels.to(device)
    return replace(batch, inputs=tuple(x.to(device) for x in batch.inputs), labels=labels)


def _accelerators(device: str | torch.device) -> list[int]:
    """The CUDA devices whose RNG fork_rng must save and restore (none on CPU)."""
    device = torch.device(device)
    return [device.index or 0] if device.type == "cuda" else []


def _progress_line(point: FitPoint, config: FitConfig, optimizer: torch.optim.Optimizer, started: float) -> str:
    metric = "" if point.metric is None else f"  held-out {point.metric:.4f}"
    lr = optimizer.param_groups[0]["lr"]
    return f"fit: step {point.step}/{config.steps}  loss {point.loss:.4f}{metric}  lr {lr:.2e}  {time.perf_counter() - started:.1f} s"
