"""Run the steps in order. Before the first: refuse an order in which a step lacks what it needs
(`check_order`). After each one: check the model still runs on its example inputs, keeps the
original's output shape, gives finite values and recorded an edit for every parameter shape it
changed; then measure params, MACs, bytes and quality against the original on held-out data, and
record the step (Olive's lineage habit). After the last: measure quality on the final ONNX, the
file that ships, when there is one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from pydantic import BaseModel

from compress.context import Context, refuse_heldout
from compress.distributed import current
from compress.errors import RunFailed, UsageError
from compress.heap import release_freed
from compress.metrics import mac_count, param_count, quality, state_bytes
from compress.model import Model
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.passes import PASSES
from compress.predict import torch_outputs

if TYPE_CHECKING:
    from compress.resume import RunCheckpoints


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
    # What the step produced, by kind (compress.context.Produced): the summary reads only this.
    produced: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunRecord:
    original: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    model: Model | None = None
    # Quality of the final ONNX file on the held-out data, against the original's torch outputs;
    # None when the run wrote no ONNX or has no held-out data.
    onnx_quality: dict[str, Any] | None = None


NEEDS_TEXT = {"torch": "the torch model", "onnx": "an ONNX file of the current model"}


def check_order(steps: Sequence[Step]) -> None:
    """Refuse a step whose needs (PASSES[name].needs) no earlier step meets, with one UsageError
    naming the step, what it needs and where to move it. A torch-changing step makes an earlier
    ONNX stale (so it must be exported again before anything uses it, and before the run ends);
    an ONNX-only step leaves the torch model behind (so no later step may work on it)."""
    have: dict[str, str] = {"torch": "loading"}  # what is current -> the step that made it so
    lost: dict[str, tuple[str, str]] = {}  # what is no longer current -> (where, the pass name)
    for index, step in enumerate(steps):
        spec, where = PASSES[step.name], f"step {index + 1} ({step.name})"
        for need in sorted(spec.needs):
            if need not in have:
                raise UsageError(where, f"needs {NEEDS_TEXT[need]}", _order_fix(need, step.name, lost.get(need)))
        if spec.changes == "torch" and "onnx" in have:
            lost["onnx"] = (where, step.name)
            del have["onnx"]
        if spec.changes == "onnx":
            lost["torch"] = (where, step.name)
            have.pop("torch", None)
        for kind in spec.gives:
            have[kind] = where
            lost.pop(kind, None)
    if "onnx" in lost:
        where, name = lost["onnx"]
        raise UsageError(where, "changes the torch model after its ONNX file was written",
                         f"no later step writes it again; add {_givers('onnx')} after {name}, so the ONNX in the run folder is the final model")


def export_first(steps: Sequence[Step]) -> tuple[Step, ...]:
    """`steps` with each ONNX-only step (ptq) that comes right before the export it needs swapped
    with that export: `ptq --engine ort export` reads as "quantize, and ship ONNX", as `qat export`
    does, and ptq can only work on an exported file. Any other order is left for check_order."""
    out = list(steps)
    have_onnx = False
    for index, step in enumerate(out):
        spec = PASSES[step.name]
        nxt = PASSES[out[index + 1].name] if index + 1 < len(out) else None
        if (spec.changes == "onnx" and "onnx" in spec.needs and not have_onnx and nxt is not None
                and "onnx" in nxt.gives and "onnx" not in nxt.needs):
            out[index], out[index + 1] = out[index + 1], out[index]
            spec = nxt
        if spec.changes == "torch":
            have_onnx = False
        have_onnx = have_onnx or "onnx" in spec.gives
    return tuple(out)


def _order_fix(need: str, name: str, lost: tuple[str, str] | None) -> str:
    if need == "torch" and lost is not None and lost[1] == name:
        return f"{lost[0]} already did {name}, and its result is an ONNX file; run {name} once"
    if need == "torch" and lost is not None and "onnx" in PASSES[name].gives:
        return f"{lost[0]} changed only the ONNX, and its file is the final model; drop this {name} (one {name}, before {lost[1]})"
    if need == "torch" and lost is not None:
        return f"{lost[0]} changed only the ONNX, so the torch model no longer matches it; put {name} before {lost[1]}"
    if lost is not None:
        return f"{lost[0]} changed the model after its ONNX was written; put {_givers(need)} between {lost[1]} and {name}"
    return f"put {_givers(need)} before {name}"


# The role a step's own `data` plays, where it is not training data (the words of the refusal).
DATA_ROLES = {"ptq": "calibration"}


def check_data(steps: Sequence[Step], heldout_spec: str | None) -> None:
    """Refuse, before any step runs, a step whose own `data` is the held-out spec (the same refusal
    `Context.dataset` makes when the step reads it)."""
    for step in steps:
        spec = getattr(step.config, "data", None)
        if isinstance(spec, str):
            refuse_heldout(spec, DATA_ROLES.get(step.name, "train"), heldout_spec)


def _givers(kind: str) -> str:
    """The passes that make `kind` from scratch (not those that only rework an existing one)."""
    return " or ".join(name for name, spec in PASSES.items() if kind in spec.gives and kind not in spec.needs) or "a step that makes it"


def run(model: Model, steps: list[Step], ctx: Context, checkpoints: RunCheckpoints | None = None) -> RunRecord:
    """Run `steps` on `model`; with `checkpoints`, each step's fit saves its state there (and
    continues from it when the run resumes). Under torchrun, ranks other than 0 only build the
    torch model with rank 0 (compress.distributed): they skip the ONNX steps and measure nothing."""
    steps = list(export_first(steps))
    check_order(steps)
    main = current().main
    release_freed()  # between phases (here: reading the data), so a phase's peak does not stack on the last one's leftovers
    reference = _reference_outputs(ctx) if main else None
    release_freed()
    record = RunRecord(original=measure(ctx.teacher, ctx, reference, outputs=reference) if main else {}, model=model)
    expected_shape = ctx.teacher(*ctx.teacher.example_inputs).shape
    stats = record.original
    for index, step in enumerate(steps):
        if not main and "onnx" in PASSES[step.name].needs | PASSES[step.name].gives:
            continue  # export, ptq, bench: rank 0 writes and times the ONNX files
        where = _where(steps, index)
        ctx.log(f"[{index + 1}/{len(steps)}] {step.name}")
        started = time.perf_counter()
        config = with_run_seed(step.config, ctx.seed)
        try:
            step_ctx = ctx if checkpoints is None else replace(ctx, checkpointing=checkpoints.for_step(index, step.name))
            result = PASSES[step.name].fn(model, config, step_ctx)
        except RunFailed as exc:
            raise RunFailed(f"{where}: {exc}") from exc
        seconds = time.perf_counter() - started
        check_runs(result.model, expected_shape, where)
        check_edits(model, result.model, where)
        # A pass that leaves the torch model as it was (export, bench) or changes only the ONNX
        # (ptq, which records a marker) leaves nothing new to measure in torch.
        unchanged = result.model is model or PASSES[step.name].changes != "torch"
        before, stats = stats, (stats if unchanged or not main else measure(result.model, ctx, reference))
        model = result.model
        for key, value in result.artifacts.items():
            ctx.artifacts[key] = value
        ctx.configs[step.name] = step.config
        for role, source in result.data.items():
            ctx.data[role] = source
        record.steps.append(StepRecord(
            name=step.name,
            config=config.model_dump(mode="json"),
            before=before,
            after=stats,
            seconds=round(seconds, 3),
            figures=result.figures,
            artifacts={k: str(v) for k, v in result.artifacts.items()},
            produced={kind: dict(figures) for kind, figures in result.produced.items()},
        ))
        record.model = model
        release_freed()
    onnx = ctx.artifacts.get("onnx")
    if onnx is not None and ctx.heldout is not None:
        ctx.log(f"quality of the final ONNX ({Path(onnx).name}) on {ctx.heldout.name}")
        outputs = onnx_outputs(open_session(onnx), ctx.heldout)
        record.onnx_quality = quality(model.task, outputs, reference, ctx.heldout.labels)
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


def with_run_seed(config: BaseModel, seed: int) -> BaseModel:
    """A pass config's own `seed` field, when the step does not set it, is the run's one seed."""
    if "seed" in type(config).model_fields and "seed" not in config.model_fields_set:
        return config.model_copy(update={"seed": seed})
    return config


def check_edits(before: Model, after: Model, where: str) -> None:
    """A step that changed a parameter's shape must record a structural edit (Model.edits), or
    the saved model could not be rebuilt from data."""
    if after is before or after.edits != before.edits:
        return
    old = {k: tuple(v.shape) for k, v in before.module.state_dict().items()}
    new = {k: tuple(v.shape) for k, v in after.module.state_dict().items()}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        shown = ", ".join(f"{k} {list(old[k]) if k in old else 'none'} -> {list(new[k]) if k in new else 'none'}" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise RunFailed(f"{where}: changed parameter shapes ({shown}{more}) without recording a structural edit, "
                        "so the saved model could not be rebuilt; the pass must add an edit to Model.edits (compress.edits)")


def _reference_outputs(ctx: Context) -> torch.Tensor | None:
    return None if ctx.heldout is None else torch_outputs(ctx.teacher, ctx.heldout)


def _where(steps: list[Step], index: int) -> str:
    before = " -> ".join(s.name for s in steps[:index])
    return f"step {index + 1} ({steps[index].name})" + (f" after {before}" if before else "")
