"""The one export: a float ONNX graph with a dynamic batch axis, checked by `onnx.checker`.

The TorchScript exporter is tried first: in torch 2.13 the dynamo exporter builds opset 18 and
cannot down-convert to 17, and its MiniLM graph fails the checker (benchmarks/README.md). Dynamo is
the fallback. The file appears at `path` only once it is complete and checked.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from compress.atomic import atomic_path
from compress.errors import RunFailed
from compress.heap import release_freed
from compress.model import Model
from compress.onnx.structure import load_structure


@dataclass(frozen=True)
class Exported:
    path: Path
    exporter: str
    opset: int
    bytes: int


def export_onnx(model: Model, path: str | Path, opset: int = 17, exporters: tuple[str, ...] = ("torchscript", "dynamo")) -> Exported:
    """`exporters` in the order tried; a PT2E module (ptq --engine inc) only exports with dynamo."""
    path = Path(path)
    module = model.module
    module.eval()  # not chained: a PT2E module's eval() returns None
    errors = []
    with atomic_path(path) as tmp:
        for exporter in exporters:
            try:
                _export(module, model, tmp, opset, exporter)
                break
            except Exception as exc:  # each exporter fails in its own ways; try the next, then report both
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        else:
            raise RunFailed(f"no exporter could export {model.name} ({'; '.join(errors)})")
        release_freed()  # the exporter's graph and serialized copies are garbage before the checker reads the file
        try:
            # Given the path, the checker reads the file in C++: no Python copy of the weights.
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise RunFailed(f"onnx.checker rejects the {exporter} graph: {str(exc).splitlines()[0]}") from exc
        real_opset = next(o.version for o in load_structure(tmp).opset_import if o.domain in ("", "ai.onnx"))
    return Exported(path, exporter, real_opset, path.stat().st_size)


def _export(module: torch.nn.Module, model: Model, path: Path, opset: int, exporter: str) -> None:
    kwargs = dict(input_names=list(model.input_names), output_names=["output"], opset_version=opset)
    # The exporters print their own diagnostics (warnings, stdout, torch.onnx loggers); the pass
    # reports what matters: the exporter used, the opset reached, and parity.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("torch.onnx", "onnxscript"):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(module, model.example_inputs, str(path), dynamo=False,
                              dynamic_axes=model.dynamic_axes, do_constant_folding=True, **kwargs)
        else:
            dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence")}
            shapes = tuple({axis: dims[name] for axis, name in model.dynamic_axes[i].items()} for i in model.input_names)
            torch.onnx.export(module, model.example_inputs, str(path), dynamo=True,
                              dynamic_shapes=shapes, external_data=False, **kwargs)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
