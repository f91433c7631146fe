"""Intel Neural Compressor 3.x (`neural-compressor-pt`, the optional `inc` extra) static INT8
through PT2E: `torch.export` with a dynamic batch (and sequence, for text) -> `prepare` with a
`StaticQuantConfig` -> calibrate -> `convert`; or INC's accuracy-aware `autotune` over its own
configuration set, stopping at the first one within a tolerable relative loss.

Imported only when `ptq --engine inc` runs. INC missing, or INC failing on a model, is refused as
bad input naming the engine (`--engine ort` quantizes every model compress exports). The ONNX
then comes from `torch.onnx.export(dynamo=True)` (the only exporter that takes the PT2E graph,
research/dependencies.md) through compress's one export, and `compress.quant.qdq_tidy` makes the
Q/DQ form onnxruntime fuses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.model import Model

ENGINE = "ptq engine"
FIX = "use --engine ort"


@dataclass(frozen=True)
class IncQuantized:
    module: nn.Module
    trials: int  # configurations INC quantized and scored (1 without autotune)
    config: str  # the configuration kept, as INC states it


def inc_version() -> str:
    """The installed neural-compressor-pt version; a UsageError when the extra is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neural-compressor-pt")
    except PackageNotFoundError:
        raise UsageError(ENGINE, "inc", "Intel Neural Compressor is not installed (pip install 'compress[inc]'); " + FIX) from None


def quantize_inc(model: Model, calibration: Dataset, batch_size: int, tolerable_loss: float | None,
                 max_trials: int, score: Callable[[nn.Module], float]) -> IncQuantized:
    """The INT8 PT2E module of `model`, calibrated on `calibration`. With `tolerable_loss`, INC's
    autotune keeps the first configuration whose `score` (higher is better; agreement or cosine
    to the float model on the calibration data, never the held-out set) loses at most that share
    of the float model's score."""
    inc_version()
    try:
        with _quiet():
            from neural_compressor.torch.export import export
            from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune, convert, prepare

            examples, shapes = _export_inputs(model)
            graph = export(model.module.eval(), examples, dynamic_shapes=shapes)
            if graph is None:  # INC logs the torch.export error and returns None
                raise RuntimeError("torch.export could not capture the model")

            def calibrate(prepared: nn.Module) -> None:
                with torch.no_grad():
                    for batch in calibration.batches(batch_size):
                        prepared(*batch.inputs)

            if tolerable_loss is None:
                prepared = prepare(graph, StaticQuantConfig())
                calibrate(prepared)
                return IncQuantized(_evaluable(convert(prepared)), 1, _describe(StaticQuantConfig()))
            candidates = [StaticQuantConfig(act_sym=sym, act_algo=algo) for sym in (False, True) for algo in ("minmax", "kl")]
            scores: list[float] = []  # the float baseline's first, then one per configuration tried

            def scored(candidate: nn.Module) -> float:
                scores.append(score(_evaluable(candidate)))
                return scores[-1]

            tuning = TuningConfig(config_set=candidates, tolerable_loss=tolerable_loss, max_trials=max_trials)
            tuned = autotune(graph, tuning, eval_fn=scored, run_fn=calibrate, example_inputs=examples)
    except UsageError:
        raise
    except Exception as exc:  # INC and torch.export fail in many types; the model is what they refused
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(ENGINE, "inc", f"Intel Neural Compressor could not quantize {model.name} ({type(exc).__name__}: {cause}); {FIX}") from exc
    trials = scores[1:]
    if tuned is None:
        raise UsageError(ENGINE, "inc", f"none of the {len(trials)} configurations INC's autotune tried lost at most {tolerable_loss:g} "
                         f"of the float model's score {scores[0]:.4f} (best {max(trials, default=0):.4f}); raise --tolerable-loss or {FIX}")
    best = candidates[trials.index(max(trials))]  # INC keeps its best-scored trial
    return IncQuantized(_evaluable(tuned), len(trials), f"autotune: {_describe(best)} (score {max(trials):.4f}, float {scores[0]:.4f})")


def _evaluable(module: nn.Module) -> nn.Module:
    """A PT2E module refuses .eval(), which every compress measurement calls; it has no dropout or
    batch statistics left to switch, so eval() becomes harmless."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    allow_exported_model_train_eval(module)
    return module


def _export_inputs(model: Model) -> tuple[tuple[torch.Tensor, ...], tuple[dict[int, torch.export.Dim], ...]]:
    """Example inputs at batch 2 (torch.export specialises a size-1 dimension) with the batch, and
    a text model's sequence, marked dynamic."""
    dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence")}
    examples = tuple(torch.cat([x, x]) for x in model.example_inputs)
    axes = model.dynamic_axes
    shapes = tuple({axis: dims[name] for axis, name in axes[input_name].items()} for input_name in model.input_names)
    return examples, shapes


def _describe(config: object) -> str:
    fields = ("w_dtype", "w_granularity", "act_dtype", "act_sym", "act_algo")
    return ", ".join(f"{f} {getattr(config, f)}" for f in fields if hasattr(config, f))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """INC logs every step at INFO and torchao warns about CUDA extensions it cannot load; progress
    is compress's to report (stderr), and stdout is for results."""
    loggers = [logging.getLogger(name) for name in ("neural_compressor", "torchao", "torch.export", "torch._export", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    # INC's logger takes its level from LOGLEVEL when first imported (and logs while importing).
    previous = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = "ERROR"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if previous is None:
            os.environ.pop("LOGLEVEL", None)
        else:
            os.environ["LOGLEVEL"] = previous
