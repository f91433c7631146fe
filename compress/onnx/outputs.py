"""Run an onnxruntime session over a dataset in batches, giving one tensor of outputs in the data's
order (the ONNX twin of `compress.predict.torch_outputs`; padded text is cut to each batch's
longest real sequence when the graph's sequence axis is dynamic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch

from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.predict import in_data_order


class InputSpec(NamedTuple):
    name: str
    shape: list[int | str]


def onnx_outputs(session: ort.InferenceSession, data: Dataset, batch_size: int = 64) -> torch.Tensor:
    specs = session.get_inputs()
    check_shapes(specs, data)
    dynamic_length = all(len(s.shape) < 2 or not isinstance(s.shape[1], int) for s in specs)
    return in_data_order(
        (index, torch.from_numpy(np.asarray(session.run(None, {s.name: x.numpy() for s, x in zip(specs, inputs)})[0])))
        for index, inputs in data.padded_batches(batch_size, trim=dynamic_length)
    )


def graph_inputs(graph: onnx.GraphProto) -> list[InputSpec]:
    """The graph's inputs as onnxruntime's session lists them: fixed sizes as ints, others by name."""
    return [InputSpec(i.name, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim])
            for i in graph.input]


def check_shapes(specs: Sequence[InputSpec | ort.NodeArg], data: Dataset) -> None:
    """Fixed ONNX dimensions of the inputs `specs` must match the data; otherwise say which,
    instead of onnxruntime's error."""
    if len(specs) != len(data.inputs):
        raise UsageError("data", data.name, f"gives {len(data.inputs)} input(s) but the ONNX model takes {len(specs)} ({', '.join(s.name for s in specs)}); choose matching --data")
    for spec, tensor in zip(specs, data.inputs):
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        if len(spec.shape) != tensor.dim() or any(tensor.shape[i] != d for i, d in fixed[1:] if i > 0):
            raise UsageError("data", data.name, f"has shape {list(tensor.shape)} but ONNX input {spec.name} expects {spec.shape}; choose matching --data")
