"""`tensors:FILE`: inputs saved as `.safetensors` or `.npz`, one array per model input, named by
the input names (`input`, `pixel_values`, `input_ids` + `attention_mask`, ...), with optional
integer `labels`. A model with one input also takes a file with one array of another name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compress.errors import UsageError
from compress.model import Model

LABELS = "labels"


def load_tensors(path: Path, model: Model | None, spec: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """The model's inputs in its input order, and the labels (None when the file has none)."""
    arrays = _read(path, spec)
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise UsageError("data", spec, f"holds no arrays besides {LABELS!r}; save one array per model input")
    names = model.input_names if model is not None else tuple(arrays)
    if model is not None and len(names) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing or extra:
        raise UsageError("data", spec, f"holds {sorted(arrays)} but {model.name} takes {list(names)}; name the arrays after the inputs (and 'labels')")
    inputs = tuple(arrays[n] for n in names)
    rows = {x.shape[0] if x.dim() else 0 for x in inputs}
    if len(rows) != 1 or 0 in rows:
        shapes = ", ".join(f"{n} {list(x.shape)}" for n, x in zip(names, inputs))
        raise UsageError("data", spec, f"arrays must share their first (batch) axis: {shapes}")
    if labels is not None:
        if labels.dim() != 1 or labels.shape[0] != inputs[0].shape[0] or labels.is_floating_point():
            raise UsageError("data", spec, f"labels must be integers of shape [{inputs[0].shape[0]}], one per input row; got {str(labels.dtype).removeprefix('torch.')} {list(labels.shape)}")
        labels = labels.long()
    if model is not None:
        inputs = tuple(_as_dtype(x, example, n, spec) for x, example, n in zip(inputs, model.example_inputs, names))
    return inputs, labels


def _read(path: Path, spec: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UsageError("data", spec, f"{path} not found; give a .safetensors or .npz file of input arrays")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:  # never unpickle object arrays
                return {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}
    except Exception as exc:  # safetensors and numpy raise their own errors for a bad file
        raise UsageError("data", spec, f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); save it again") from exc
    raise UsageError("data", spec, f"unknown tensors file type {suffix or '(none)'}; use .safetensors or .npz")


def _as_dtype(x: torch.Tensor, example: torch.Tensor, name: str, spec: str) -> torch.Tensor:
    """Float data for float inputs (float64 arrays from numpy become float32), integers for
    token inputs; a float array for a token input is a mismatch."""
    if example.is_floating_point():
        return x.to(example.dtype) if (x.is_floating_point() or x.dtype in (torch.uint8, torch.int32, torch.int64)) else x
    if x.is_floating_point():
        raise UsageError("data", spec, f"array {name!r} is {str(x.dtype).removeprefix('torch.')} but the model's {name} takes integers {str(example.dtype).removeprefix('torch.')}")
    return x.to(example.dtype)
