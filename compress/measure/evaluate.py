"""`compress eval`: quality of a torch model or an ONNX file on a data spec, optionally against a
reference (the original), as flat figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compress.data.specs import Dataset
from compress.metrics import quality
from compress.model import Model
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs


def evaluate(candidate: Model | Path, data: Dataset, task: str, reference: Model | Path | None = None) -> dict[str, Any]:
    ours = outputs(candidate, data)
    theirs = None if reference is None else outputs(reference, data)
    return {"data": data.name, "samples": len(data), **quality(task, ours, theirs, data.labels)}


def outputs(target: Model | Path, data: Dataset) -> torch.Tensor:
    """Outputs of a torch `Model` or an ONNX file on `data`."""
    if isinstance(target, Model):
        return torch_outputs(target, data)
    return onnx_outputs(open_session(target), data)
