"""`compress.run`: one call from a loaded model and a recipe to a run folder with the compressed
model (saved as data), its ONNX files, report.json / report.md, and the gates' verdict.

The run writes into a staging folder that replaces `out` whole when it is complete
(`compress.rundir`), so the report names its files relative to the run folder."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from compress.context import Context, check_device
from compress.distributed import current, process_group, rank_device
from compress.data.specs import load_data
from compress.reporting.gate import check
from compress.model import Model, save
from compress.pipeline import check_data, run as run_steps
from compress.recipe import Recipe
from compress.resume import DEFAULT_EVERY, RunCheckpoints, open_checkpoints
from compress.rundir import checkpoint_folder, relative_paths, run_folder
from compress.reporting.digest import state_sha256
from compress.reporting.report import build_report, write_report


def run(
    model: Model,
    recipe: Recipe,
    out: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    data: str | None = None,
    log: Callable[[str], None] = lambda _: None,
    inputs_sha256: dict[str, str] | None = None,
    checkpoint_every: int = DEFAULT_EVERY,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Run `recipe` on `model` into `out`; returns the report (also written there).

    Quality is measured on `data` (default: the model's own held-out spec) against the original,
    which is kept frozen as the teacher. `out` changes only when the run completes (gates broken
    or not): then it holds this run's files and nothing else. Training steps save checkpoints
    every `checkpoint_every` steps (0: none) beside `out` until then; `resume` continues a run
    into `out` that was interrupted, from them (compress.resume).

    Under torchrun, every rank calls this; training is shared (compress.distributed), rank 0
    alone writes and returns the report, the other ranks return None.
    """
    check_device(device)
    data = data or model.eval_data
    check_data(recipe.steps, data)
    inputs = {"original_weights": state_sha256(model.module), **(inputs_sha256 or {})}
    made_from = {"model": model.source.to_dict(), "inputs": inputs, "recipe": _steps_by_key(recipe), "seed": seed, "data": data}
    folder = checkpoint_folder(Path(out).resolve())
    with process_group(device) as world:
        device = rank_device(device, world)
        if not world.main:  # no lock, no folder: a scratch run folder, and rank 0's checkpoints read only
            checkpoints = RunCheckpoints(folder, checkpoint_every, resume, made_from) if checkpoint_every else None
            with tempfile.TemporaryDirectory(prefix="compress-rank-") as scratch:
                _run(model, recipe, Path(scratch), seed=seed, device=device, data=data, log=_quiet, inputs=inputs, checkpoints=checkpoints)
            return None
        with run_folder(out, log) as staging:
            checkpoints = open_checkpoints(folder, made_from, every=checkpoint_every, resume=resume, log=log)
            try:
                return _run(model, recipe, staging, seed=seed, device=device, data=data, log=log, inputs=inputs, checkpoints=checkpoints)
            except BaseException:  # a failed step, Ctrl-C, SIGTERM: the run folder stays as it was
                if checkpoints is not None:
                    checkpoints.close_unfinished(log)
                raise


def _quiet(_: str) -> None:
    pass


def _steps_by_key(recipe: Recipe) -> dict[str, Any]:
    """The recipe with its steps keyed `1.prune`, `2.distill`, so a changed setting is named
    `recipe.steps.2.distill.lr`."""
    as_dict = recipe.to_dict()
    return {**as_dict, "steps": {f"{i + 1}.{s.name}": s.config.model_dump(mode="json") for i, s in enumerate(recipe.steps)}}


def _run(model: Model, recipe: Recipe, out: Path, *, seed: int, device: str, data: str | None, log: Callable[[str], None],
         inputs: dict[str, str], checkpoints: RunCheckpoints | None) -> dict[str, Any] | None:
    torch.manual_seed(seed)
    # The original is the teacher and the reference as it is, not a copy: a pass never mutates the
    # model it is given (it changes a copy), so a copy here only doubled the weights in memory
    # (90 MB for MiniLM). The weights' digest (`inputs`), taken before the first step and compared
    # after the last, holds every pass to that contract.
    teacher = model
    heldout = load_data(data, model) if data else None
    if heldout is not None:
        log(f"quality measured on {data} ({len(heldout)} inputs) against the original")
    ctx = Context(run_dir=out, teacher=teacher, data={} if heldout is None else {"heldout": heldout},
                  heldout_spec=data, seed=seed, device=device, log=log)
    record = run_steps(model, list(recipe.steps), ctx, checkpoints)
    if state_sha256(teacher.module) != inputs["original_weights"]:
        raise RuntimeError("a step changed the original model's weights in place; a pass must change a copy (Model.copy)")
    if not current().main:
        return None
    save(record.model, out / "model")
    report = build_report(
        record,
        model_info={"name": model.name, "task": model.task, "source": model.source.to_dict(), "saved": "model"},
        recipe=recipe.to_dict(),
        seed=seed,
        inputs=inputs,
        data=data,
        task=model.task,
        has_labels=heldout is not None and heldout.labels is not None,
    )
    violations = check(report, recipe.gates)
    report["gates"] = {
        "budgets": recipe.gates.model_dump(mode="json", exclude_none=True),
        "violations": [dataclasses.asdict(v) for v in violations],
    }
    report = relative_paths(report, out)
    write_report(report, out)
    return report

