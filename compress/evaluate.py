"""`compress eval`: quality of a torch model or an ONNX file on a data spec, optionally against a
reference (the original), as flat figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.data import Dataset
from compress.metrics import quality
from compress.model import Model
from compress.predict import outputs


def evaluate(candidate: Model | Path, data: Dataset, task: str, reference: Model | Path | None = None) -> dict[str, Any]:
    ours = outputs(candidate, data)
    theirs = None if reference is None else outputs(reference, data)
    return {"data": data.name, "samples": len(data), **quality(task, ours, theirs, data.labels)}
