"""The `prune` pass: structured pruning that really removes tensors (channels of CNNs; attention
heads and FFN neurons of Transformer encoders), to a ratio or to a MACs / params / latency budget.
The edit records the kept indices, so the pruned model saves as data and reloads."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from compress.config import StrictConfig

from compress.context import Context, Result
from compress.errors import UsageError

if TYPE_CHECKING:
    from compress.model import Model

DEFAULT_RATIO = 0.5
# How many larger ratios a budget's final check may try when its new measure misses the budget.
CONFIRM_STEPS = 3


class PruneConfig(StrictConfig):

    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of the channels (CNNs) or heads and FFN neurons (Transformers) removed from each prunable group, as Torch-Pruning's pruning_ratio; 0.5 when no target is given")
    head_ratio: float | None = Field(None, ge=0, lt=1, description="Transformers: fraction of each layer's attention heads removed (default: --ratio)")
    ffn_ratio: float | None = Field(None, ge=0, lt=1, description="Transformers: fraction of each layer's FFN neurons removed (default: --ratio)")
    target_macs: int | None = Field(None, gt=0, description="prune until the model needs at most this many multiply-accumulates per example input")
    target_params: int | None = Field(None, gt=0, description="prune until the model has at most this many parameters")
    target_latency_ms: float | None = Field(None, gt=0, description="prune until onnxruntime runs the model in at most this many milliseconds (median, at --latency-batch and --latency-threads)")
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = Field("l2", description="how units are ranked: weight L1 or L2 norm, first-order Taylor on --data, or BatchNorm scale")
    allocation: Literal["uniform", "global", "latency"] = Field("uniform", description="uniform: every group loses the same fraction; global: one threshold over normalised scores; latency: global, each channel's score divided by the onnxruntime time per MAC it costs (a per-layer table measured once per model and machine, cached in the run folder), so at equal MACs the model runs faster")
    round_to: int | None = Field(None, ge=1, le=1024, description="kept widths are multiples of this (default 8, the widths onnxruntime runs fastest here; groups narrower than 8 are then kept whole)")
    ignore: tuple[str, ...] = Field((), description="glob of module names never pruned (repeatable); the classifier, embeddings and anything reaching the output are always kept")
    data: str | None = Field(None, description="data spec the taylor importance is computed on, e.g. digits:train or text:train")
    taylor_batches: int = Field(4, ge=1, le=1000, description="batches of --data back-propagated for taylor importance")
    batch_size: int = Field(32, ge=1, le=4096, description="batch size of the taylor batches")
    latency_batch: int = Field(1, ge=1, le=4096, description="batch size the latency target and table are measured at")
    latency_threads: int = Field(1, ge=1, le=256, description="onnxruntime intra-op threads the latency target and table are measured with")

    @model_validator(mode="after")
    def _one_goal(self) -> PruneConfig:
        goals = [name for name in ("ratio", "target_macs", "target_params", "target_latency_ms") if getattr(self, name) is not None]
        if len(goals) > 1:
            raise ValueError(f"give one of ratio, target_macs, target_params, target_latency_ms, not {' and '.join(goals)}")
        if goals and goals[0] != "ratio" and (self.head_ratio is not None or self.ffn_ratio is not None):
            raise ValueError("head_ratio and ffn_ratio fix the widths; a target searches them: give one or the other")
        return self


def prune(model: Model, config: PruneConfig, ctx: Context) -> Result:
    from compress.pruning.plan import DEFAULT_ROUND_TO, Ratios, pruner_for, unmatched_globs
    from compress.pruning.search import find_ratio

    pruner = pruner_for(model, config.ignore)
    for glob in unmatched_globs(model, config.ignore):
        ctx.log(f"prune: warning: --ignore {glob!r} matches no module of {model.name}")
    if config.importance == "taylor":
        _taylor_gradients(pruner.work, config, ctx)
    scores = pruner.scores(config.importance)
    round_to = config.round_to or DEFAULT_ROUND_TO
    cost = _latency_cost(pruner, config, ctx) if config.allocation == "latency" else None
    allocation = "global" if config.allocation == "latency" else config.allocation

    def edit_at(ratio: float) -> dict:
        ratios = Ratios(ratio, _or(config.head_ratio, ratio), _or(config.ffn_ratio, ratio))
        return pruner.edit(scores, ratios, allocation, round_to, config.round_to is not None, cost)

    figures: dict = {"kind": pruner.kind, "groups": len(pruner.groups), "importance": config.importance,
                     "allocation": config.allocation, "round_to": round_to}
    ratio = config.ratio if config.ratio is not None else DEFAULT_RATIO
    target = _target(config)
    if target is None:
        edit = edit_at(ratio)
        shares = (f"heads {_or(config.head_ratio, ratio):.3f}, FFN neurons {_or(config.ffn_ratio, ratio):.3f}" if pruner.kind == "heads"
                  else f"channels {ratio:.3f}")
        ctx.log(f"prune: {model.name}: removing {shares} of each group ({config.importance}, {config.allocation})")
        pruned = pruner.apply(edit, check=True)
    else:
        with _measurer(target, config, ctx, model) as (option, goal, unit, measure):
            ctx.log(f"prune: searching the ratio that meets {option} {goal:g} {unit}")
            ratio, probes = find_ratio(lambda r: measure(pruner.apply(edit_at(r))), measure(model), goal, option, unit)
            edit = edit_at(ratio)
            pruned = pruner.apply(edit, check=True)
            reached = measure(pruned)
            # A latency is a noisy figure: the final check is a new timing, and when it misses the
            # budget the next larger probed ratio that met it is checked in turn (a few at most).
            larger = sorted(p.ratio for p in probes if p.ratio > ratio and p.value <= goal)[:CONFIRM_STEPS]
            for ratio in larger if reached > goal else ():
                ctx.log(f"prune: final check {reached:.4g} {unit} is over {option} {goal:g}: checking ratio {ratio:.3f}")
                edit = edit_at(ratio)
                pruned = pruner.apply(edit, check=True)
                reached = measure(pruned)
                if reached <= goal:
                    break
        ctx.log(f"prune: {option} {goal:g} met at ratio {ratio:.3f}: {reached:.4g} {unit} ({len(probes)} probes)")
        figures.update({"target": option, "target_value": goal, "reached": reached, "probes": len(probes)})
    figures.update({"ratio": round(ratio, 4), **_widths(edit, pruner)})
    artifacts = _plain_folder(pruned, ctx)
    if artifacts:
        figures["hf_folder"] = str(artifacts["hf_model"])
    return Result(pruned, figures, artifacts)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _target(config: PruneConfig) -> str | None:
    return next((name for name in ("target_macs", "target_params", "target_latency_ms") if getattr(config, name) is not None), None)


@contextlib.contextmanager
def _measurer(target: str, config: PruneConfig, ctx: Context, original: Model) -> Iterator[tuple[str, float, str, Callable[[Model], float]]]:
    """(option, goal, unit, figure of a Model) for the budget asked; latency probes are exported
    into a temp folder of the run, removed afterwards, and timed in turns with `original`."""
    from compress.metrics import mac_count, param_count

    if target == "target_macs":
        yield "--target-macs", float(config.target_macs), "MACs", lambda m: float(mac_count(m.module, m.example_inputs))
    elif target == "target_params":
        yield "--target-params", float(config.target_params), "parameters", lambda m: float(param_count(m.module))
    else:
        from compress.pruning.search import LatencyProbe

        folder = Path(tempfile.mkdtemp(prefix=".prune-latency-", dir=ctx.run_dir))
        try:
            probe = LatencyProbe(original, folder, config.latency_batch, config.latency_threads)
            yield "--target-latency-ms", config.target_latency_ms, "ms", lambda m: probe.original_ms if m is original else probe(m)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _taylor_gradients(work: Model, config: PruneConfig, ctx: Context) -> None:
    from compress.pruning.taylor import accumulate_gradients

    if config.data is None:
        raise UsageError("prune --importance taylor", "no --data", "give the data its gradients come from, e.g. --data digits:train or --data text:train")
    seen = accumulate_gradients(work, ctx.dataset(config.data, "train"), config.taylor_batches, config.batch_size, ctx.seed)
    ctx.log(f"prune: taylor importance from {seen} samples of {config.data}")


def _latency_cost(pruner, config: PruneConfig, ctx: Context):
    from compress.pruning.latency import channel_cost

    return channel_cost(pruner, ctx.run_dir, config.latency_batch, config.latency_threads, ctx.log)


def _widths(edit: dict, pruner) -> dict:
    """Kept / original units, summed over groups (channels, or heads and FFN neurons)."""
    widths = {g.name: g.width for g in pruner.groups}
    if edit["kind"] == "prune_heads":
        layers = edit["layers"].items()
        return {"heads_kept": sum(len(k["heads"]) for _, k in layers), "heads": sum(widths[f"{n}:heads"] for n, _ in layers),
                "ffn_kept": sum(len(k["ffn"]) for _, k in layers), "ffn": sum(widths[f"{n}:ffn"] for n, _ in layers)}
    kept = edit["kept"]
    return {"channels_kept": sum(len(v) for v in kept.values()), "channels": sum(widths[k] for k in kept),
            "groups_pruned": sum(len(v) < widths[k] for k, v in kept.items())}


def _plain_folder(pruned: Model, ctx: Context) -> dict[str, Path]:
    """Transformers whose pruned widths a config can describe also save as a plain Hugging Face
    folder (`AutoModel.from_pretrained` loads it without compress), written to a temp folder and
    renamed."""
    from compress.pruning.heads import save_plain_folder

    if pruned.edits[-1]["kind"] != "prune_heads":
        return {}
    final = ctx.run_dir / "hf_model"
    staging = Path(tempfile.mkdtemp(prefix=".hf_model-", dir=ctx.run_dir))
    try:
        if save_plain_folder(pruned.module, staging, pruned.tokenizer) is None:
            return {}
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"hf_model": final}
