"""Run the steps in order. After each one: check the model still runs on its example inputs,
keeps the original's output shape and gives finite values; then measure params, MACs, bytes and
quality against the original on held-out data, and record the step (Olive's lineage habit)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel

from compress.context import Context
from compress.errors import RunFailed
from compress.metrics import mac_count, param_count, quality, state_bytes
from compress.model import Model
from compress.passes import PASSES
from compress.predict import torch_outputs


class Step(NamedTuple):
    name: str
    config: BaseModel


@dataclass(frozen=True)
class StepRecord:
    name: str
    config: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    seconds: float
    figures: dict[str, Any]
    artifacts: dict[str, str]


@dataclass
class RunRecord:
    original: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    model: Model | None = None


def run(model: Model, steps: list[Step], ctx: Context) -> RunRecord:
    reference = _reference_outputs(ctx)
    record = RunRecord(original=measure(ctx.teacher, ctx, reference, outputs=reference), model=model)
    expected_shape = ctx.teacher(*ctx.teacher.example_inputs).shape
    stats = record.original
    for index, step in enumerate(steps):
        where = _where(steps, index)
        ctx.log(f"[{index + 1}/{len(steps)}] {step.name}")
        started = time.perf_counter()
        try:
            result = PASSES[step.name].fn(model, step.config, ctx)
        except RunFailed as exc:
            raise RunFailed(f"{where}: {exc}") from exc
        seconds = time.perf_counter() - started
        check_runs(result.model, expected_shape, where)
        # A pass that returns the model it was given (export, bench) changed nothing to measure.
        before, stats = stats, (stats if result.model is model else measure(result.model, ctx, reference))
        model = result.model
        for key, value in result.artifacts.items():
            ctx.artifacts[key] = value
        record.steps.append(StepRecord(
            name=step.name,
            config=step.config.model_dump(mode="json"),
            before=before,
            after=stats,
            seconds=round(seconds, 3),
            figures=result.figures,
            artifacts={k: str(v) for k, v in result.artifacts.items()},
        ))
        record.model = model
    return record


def measure(model: Model, ctx: Context, reference: torch.Tensor | None, outputs: torch.Tensor | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "params": param_count(model.module),
        "macs": mac_count(model.module, model.example_inputs),
        "bytes": state_bytes(model.module),
    }
    if ctx.heldout is not None:
        outputs = torch_outputs(model, ctx.heldout) if outputs is None else outputs
        figures["quality"] = quality(model.task, outputs, reference, ctx.heldout.labels)
    return figures


def check_runs(model: Model, expected_shape: torch.Size, where: str) -> None:
    """The model must still run on its example inputs, keep the output shape and stay finite."""
    try:
        out = model(*model.example_inputs)
    except Exception as exc:  # any failure here is the step's fault; name it, with the cause
        raise RunFailed(f"{where}: the model no longer runs on its example inputs ({type(exc).__name__}: {exc})") from exc
    if out.shape[1:] != expected_shape[1:]:
        raise RunFailed(f"{where}: output shape changed from {list(expected_shape)} to {list(out.shape)}")
    if not torch.isfinite(out).all():
        raise RunFailed(f"{where}: the model gives non-finite outputs ({int((~torch.isfinite(out)).sum())} values)")


def _reference_outputs(ctx: Context) -> torch.Tensor | None:
    return None if ctx.heldout is None else torch_outputs(ctx.teacher, ctx.heldout)


def _where(steps: list[Step], index: int) -> str:
    before = " -> ".join(s.name for s in steps[:index])
    return f"step {index + 1} ({steps[index].name})" + (f" after {before}" if before else "")
