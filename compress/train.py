"""`fit`: the one training loop. KD recovery, QAT and any later fine-tuning call it.

One loop, readable top to bottom (nanoGPT's `train.py` habit): AdamW, a linear warm-up then a
cosine decay to `min_lr_ratio` of the peak rate, gradient-norm clipping, a held-out evaluation
every `eval_every` steps that keeps the best state, and one progress line per evaluation. The
loop owns no data format and no loss: it asks `data` for shuffled batches and `loss_fn` for a
scalar loss.

Determinism: the data order comes from `seed` (epoch e is shuffled with `seed + e`), and the global
torch RNG (dropout) is seeded from `seed` inside `torch.random.fork_rng`, so the caller's RNG state
is the same after `fit` as before, and two fits with the same seed give the same weights.

Resume: the step counter drives everything (learning rate, the data position, evaluation), so a
checkpoint (weights, optimizer, schedule, RNG, curve, best state) taken at step k and `_batches`'
stream from step k end where the uninterrupted fit would (`compress run --resume`: compress/resume.py).

Under torchrun (compress/distributed.py) the same loop wraps the student in DistributedDataParallel
and trains each rank's equal slice of every global batch; rank 0 evaluates and saves.
"""

from __future__ import annotations

import math
import time
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from compress.atomic import atomic_path
from compress.data.specs import Dataset
from compress.distributed import World, average_gradients, check_same_student, current, from_main, mean_over_ranks, rows_per_rank, shard, sync_from_main, wrap
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
    keep_best: bool = True  # end holding the best evaluated state; False: the last one (the evaluations only draw the curve)

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


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often `fit` saves its whole state, and whether it starts from that file.

    With `resume`, `fit` continues from `path` when it exists (and starts at step 0 when it does
    not: a run killed before this fit's first checkpoint). `identity` is what must not change
    between the run that wrote a checkpoint and the one that resumes from it (the step); `fit` adds
    its own settings, the seed, the data's size and the starting weights' sha256."""

    path: Path
    every: int
    resume: bool = False
    identity: Mapping[str, Any] = field(default_factory=dict)


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
    checkpointing: Checkpointing | None = None,
) -> FitResult:
    """Train `student` in place to lower `loss_fn` on batches of `data`; return the curve.

    If `loss_fn` is an `nn.Module` (a KD loss with learned projections), its trainable parameters
    are trained too. With `evaluate`, the student is measured before the first step and every
    `eval_every` steps, and ends holding the best state seen (the starting state included, so fit
    never hands back a student worse on that figure than the one it was given). The student ends in
    eval mode on `device`. With `checkpointing`, the whole state (weights, optimizer, schedule, RNG,
    curve, best state) is written atomically every `every` steps; resuming from it ends with the
    weights an uninterrupted run gives.
    """
    if len(data) == 0:
        raise UsageError("training data", "0 rows", "give data with at least one batch")
    world = current()
    if world.distributed:  # refused before any work: every rank trains an equal share of each batch
        rows_per_rank(min(config.batch_size, len(data)), world)
    student.to(device)
    loss_params = _trainable(loss_fn) if isinstance(loss_fn, nn.Module) else []
    params = _trainable(student) + loss_params
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    if not params:
        raise UsageError("model", "no trainable parameters", "unfreeze the student before training it")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # LambdaLR multiplies the peak rate; its state (last step) goes into a checkpoint as is.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: config.lr_at(step) / config.lr)
    trained = _Trained(student, loss_fn, optimizer, schedule)
    identity = _identity(checkpointing, config, seed, data, student, world)
    eval_every = config.eval_every or config.steps
    measure = lambda: _measure(student, evaluate, world, torch.device(device))  # noqa: E731
    started = time.perf_counter()
    with torch.random.fork_rng(devices=_accelerators(device)):
        torch.manual_seed(seed)
        if checkpointing is not None and checkpointing.resume and checkpointing.path.exists():
            progress = _load_checkpoint(checkpointing.path, trained, identity)
            log(f"fit: resuming at step {progress.step}/{config.steps} from {checkpointing.path}")
        else:
            progress = _Progress.at_start(student, measure())
        if world.distributed:
            check_same_student(student, world)
        model = wrap(student, torch.device(device)) if world.distributed else student
        for step, batch in zip(range(progress.step, config.steps), _batches(data, config.batch_size, seed, progress.step)):
            student.train()
            loss = loss_fn(model, _to(shard(batch, world) if world.distributed else batch, device))
            whole_batch_loss = mean_over_ranks(loss, world) if world.distributed else loss.detach()
            if not torch.isfinite(whole_batch_loss):
                raise RunFailed(f"training loss became {whole_batch_loss.item()} at step {step + 1} of {config.steps}"
                                f"{_last_good(checkpointing, progress)}; lower the learning rate (now {config.lr:g}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world.distributed:
                average_gradients(loss_params, world)
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            schedule.step()
            progress.add_loss(whole_batch_loss.item())
            if progress.step % eval_every == 0 or progress.step == config.steps:
                progress.report(student, measure())
                log(_progress_line(progress.history[-1], config, optimizer, started))
            if checkpointing is not None and (progress.step % checkpointing.every == 0 or progress.step == config.steps):
                _check_finite(params, progress.step, config, checkpointing)
                if world.main:
                    _save_checkpoint(checkpointing.path, trained, progress, identity)
    final_metric = progress.history[-1].metric
    if config.keep_best:
        progress.best.restore(student)
    best_step, best_metric = (progress.best.step, progress.best.metric) if config.keep_best else (config.steps, final_metric)
    if world.distributed:
        sync_from_main(student)
    student.eval()
    return FitResult(
        history=tuple(progress.history), best_step=best_step, best_metric=best_metric,
        final_metric=final_metric, loss_start=progress.loss_start, loss_end=progress.history[-1].loss,
        steps=config.steps, seconds=time.perf_counter() - started,
    )


class _Trained(NamedTuple):
    """Everything whose state a checkpoint holds besides the loop's own progress."""

    student: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler


@dataclass
class _Best:
    """The best held-out state so far, kept as a detached copy of the state dict."""

    step: int
    metric: float | None
    state: dict[str, torch.Tensor] | None

    def offer(self, student: nn.Module, step: int, metric: float | None) -> None:
        if metric is None:
            self.step = step  # without evaluation the last state is the result
        elif self.metric is None or metric >= self.metric:  # on a tie the later state, trained longer, wins
            self.step, self.metric, self.state = step, metric, _snapshot(student)

    def restore(self, student: nn.Module) -> None:
        if self.state is not None:
            student.load_state_dict(self.state)


@dataclass
class _Progress:
    """Where the loop is: steps done, the curve so far, the best state, the running loss."""

    step: int
    history: list[FitPoint]
    best: _Best
    interval_loss: float = 0.0
    interval_steps: int = 0
    loss_start: float = float("nan")

    @classmethod
    def at_start(cls, student: nn.Module, metric: float | None) -> _Progress:
        """Step 0, with the starting state's held-out figure (None without evaluation)."""
        if metric is None:
            return cls(0, [], _Best(0, None, None))
        return cls(0, [FitPoint(0, None, metric)], _Best(0, metric, _snapshot(student)))

    def add_loss(self, value: float) -> None:
        self.step += 1
        self.loss_start = value if self.step == 1 else self.loss_start
        self.interval_loss, self.interval_steps = self.interval_loss + value, self.interval_steps + 1

    def report(self, student: nn.Module, metric: float | None) -> None:
        self.history.append(FitPoint(self.step, self.interval_loss / self.interval_steps, metric))
        self.best.offer(student, self.step, metric)
        self.interval_loss, self.interval_steps = 0.0, 0


CHECKPOINT_FORMAT = 1


def _save_checkpoint(path: Path, trained: _Trained, progress: _Progress, identity: Mapping[str, Any]) -> None:
    """Everything the loop needs to go on from `progress.step`, written to a temp file and renamed.
    Only tensors, numbers and strings, so it loads back with `weights_only=True`."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "identity": json.dumps(identity, sort_keys=True, default=str),
        "student": trained.student.state_dict(),
        "loss_fn": trained.loss_fn.state_dict() if isinstance(trained.loss_fn, nn.Module) else {},
        "optimizer": trained.optimizer.state_dict(),
        "schedule": trained.schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "step": progress.step,
        "history": [[p.step, p.loss, p.metric] for p in progress.history],
        "interval": [progress.interval_loss, progress.interval_steps, progress.loss_start],
        "best": [progress.best.step, progress.best.metric, progress.best.state],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except (OSError, RuntimeError, EOFError, KeyError) as exc:
        raise UsageError("resume checkpoint", path, f"cannot be read ({exc}); run without resuming to start from step 0") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError("resume checkpoint", path, f"has format {state.get('format')}, this compress reads {CHECKPOINT_FORMAT}")
    return state


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """The identity a checkpoint was saved with, read without loading its tensors."""
    return json.loads(_read_checkpoint(path, mmap=True)["identity"])


def _load_checkpoint(path: Path, trained: _Trained, identity: Mapping[str, Any]) -> _Progress:
    """Restore the state `_save_checkpoint` wrote; refuse a checkpoint from other settings."""
    state = _read_checkpoint(path)
    saved = json.loads(state["identity"])
    current = json.loads(json.dumps(identity, sort_keys=True, default=str))
    changed = changed_keys(saved, current)
    if changed:
        raise UsageError("resume checkpoint", path, f"was written with other settings ({', '.join(changed)} differ); restore them or run without resuming")
    trained.student.load_state_dict(state["student"])
    if isinstance(trained.loss_fn, nn.Module):
        trained.loss_fn.load_state_dict(state["loss_fn"])
    trained.optimizer.load_state_dict(state["optimizer"])
    trained.schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    best_step, best_metric, best_state = state["best"]
    interval_loss, interval_steps, loss_start = state["interval"]
    return _Progress(
        step=state["step"], history=[FitPoint(*point) for point in state["history"]], best=_Best(best_step, best_metric, best_state),
        interval_loss=interval_loss, interval_steps=interval_steps, loss_start=loss_start,
    )


def changed_keys(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two JSON-like values (list items by index)."""
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        saved, current = dict(enumerate(saved)), dict(enumerate(current))
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return [prefix or "(all)"] if saved != current else []
    keys = sorted(set(saved) | set(current), key=str)
    return [k for key in keys for k in changed_keys(saved.get(key), current.get(key), f"{prefix}.{key}" if prefix else str(key))]


def _identity(checkpointing: Checkpointing | None, config: FitConfig, seed: int, data: BatchSource, student: nn.Module,
              world: World) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed from: the caller's identity, the loop's own
    settings, the number of processes (BatchNorm sees each one's share of a batch), and the student
    it started from (its weights' sha256), so a step before the fit that came out differently this
    time (a latency-driven prune times the machine) is caught."""
    if checkpointing is None:
        return {}
    from compress.reporting.digest import state_sha256

    return {**checkpointing.identity, "fit": asdict(config), "seed": seed, "rows": len(data), "processes": world.size,
            "student": state_sha256(student)}


def _check_finite(params: list[nn.Parameter], step: int, config: FitConfig, checkpointing: Checkpointing) -> None:
    """A checkpoint only ever holds finite weights, so the last one is always a good one."""
    bad = sum(int((~torch.isfinite(p)).sum()) for p in params)
    if bad:
        last = (step - 1) // checkpointing.every * checkpointing.every
        where = f"stopped at the last good checkpoint, step {last} ({checkpointing.path})" if last > 0 else "stopped before the first checkpoint"
        raise RunFailed(f"{bad} weights became non-finite by step {step} of {config.steps}; {where}; lower the learning rate (now {config.lr:g})")


def _last_good(checkpointing: Checkpointing | None, progress: _Progress) -> str:
    if checkpointing is None:
        return ""
    last = progress.step - progress.step % checkpointing.every
    if last == 0 or not checkpointing.path.exists():
        return "; stopped before the first checkpoint"
    return f"; stopped at the last good checkpoint, step {last} ({checkpointing.path})"


def _batches(data: BatchSource, batch_size: int, seed: int, start_step: int) -> Iterator[Dataset]:
    """Endless shuffled batches, epoch after epoch; the stream from `start_step` on is the same as
    the one a run from step 0 reaches there. A last batch smaller than `batch_size` is dropped
    (a batch of one breaks BatchNorm in training mode), unless the data is smaller than one batch.
    Padded text is cut to each batch's longest real sequence (`Dataset.trimmed`)."""
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
                yield batch.trimmed()
        epoch, skip = epoch + 1, 0


@torch.no_grad()
def _measure(student: nn.Module, evaluate: Evaluate | None, world: World, device: torch.device) -> float | None:
    """The held-out figure, measured on rank 0 (every rank holds its weights) and shared."""
    if evaluate is None:
        return None
    student.eval()
    metric = float(evaluate(student)) if world.main else float("nan")
    return from_main(metric, device) if world.distributed else metric


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
