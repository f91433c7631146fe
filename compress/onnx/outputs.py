"""Run an onnxruntime session over a dataset in batches, giving one tensor of outputs (the ONNX
twin of `compress.predict.torch_outputs`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from compress.data.specs import Dataset
from compress.errors import UsageError


def onnx_outputs(session: ort.InferenceSession, data: Dataset, batch_size: int = 64) -> torch.Tensor:
    names = [i.name for i in session.get_inputs()]
    _check_shapes(session, data)
    chunks = []
    for i in range(0, len(data), batch_size):
        feeds = {name: x[i : i + batch_size].numpy() for name, x in zip(names, data.inputs)}
        chunks.append(torch.from_numpy(np.asarray(session.run(None, feeds)[0])))
    return torch.cat(chunks).float()


def _check_shapes(session: ort.InferenceSession, data: Dataset) -> None:
    """Fixed ONNX dimensions must match the data; otherwise say which, instead of ORT's error."""
    specs = session.get_inputs()
    if len(specs) != len(data.inputs):
        raise UsageError("data", data.name, f"gives {len(data.inputs)} input(s) but the ONNX model takes {len(specs)} ({', '.join(s.name for s in specs)}); choose matching --data")
    for spec, tensor in zip(specs, data.inputs):
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        if len(spec.shape) != tensor.dim() or any(tensor.shape[i] != d for i, d in fixed[1:] if i > 0):
            raise UsageError("data", data.name, f"has shape {list(tensor.shape)} but ONNX input {spec.name} expects {spec.shape}; choose matching --data")
