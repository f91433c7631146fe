"""Inputs for timing an ONNX model, built from the model's own input specs.

Dim 0 is the batch axis; any other dynamic axis is a sequence axis. Values are what the model
would see in use: N(0, 1) floats, token ids within the model's vocabulary (read from the graph's
embedding table) and away from the special tokens at its bottom, an all-ones attention mask and
zero token types. The same specs, batch and seed give
the same arrays, so two graphs of one model are timed on identical inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import functools

import numpy as np
import onnxruntime as ort

from compress.errors import UsageError

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
INTEGER_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
# BERT-family vocabularies keep [PAD], [CLS], [SEP], [UNK] and unused slots below 1000; a smaller
# vocabulary gets its upper half.
TOKEN_ID_RANGE = (1000, 2000)
# Ops that pass token ids on unchanged between the graph input and the embedding's Gather.
_ID_PASSTHROUGH = {"Cast", "Identity"}


def make_feeds(
    session: ort.InferenceSession, path: Path, batch: int, seq_len: int, seed: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    specs = session.get_inputs()
    return {spec.name: input_values(spec, path, input_shape(spec, path, batch, seq_len), rng) for spec in specs}


def input_shape(spec: Any, path: Path, batch: int, seq_len: int) -> tuple[int, ...]:
    """Fill dynamic axes (None or a symbolic name): dim 0 with `batch`, the others with `seq_len`."""
    shape = []
    for axis, dim in enumerate(spec.shape):
        fixed = isinstance(dim, int) and dim >= 0
        if axis == 0 and fixed and dim != batch:
            fix = f"{path} input {spec.name!r} has a fixed batch of {dim}; bench it at batch {dim} or export a dynamic batch axis"
            raise UsageError("batch size", batch, fix)
        shape.append(dim if fixed else batch if axis == 0 else seq_len)
    return tuple(shape)


def input_values(spec: Any, path: Path, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.type in FLOAT_TYPES:
        return rng.standard_normal(shape).astype(FLOAT_TYPES[spec.type])
    if spec.type not in INTEGER_TYPES:
        raise UsageError("ONNX input", f"{path}: {spec.name} ({spec.type})", "bench feeds float, integer and bool inputs only")
    dtype, name = INTEGER_TYPES[spec.type], spec.name.lower()
    if "input_ids" in name:
        return rng.integers(*token_id_range(str(path), spec.name), size=shape).astype(dtype)
    if "mask" in name:
        return np.ones(shape, dtype=dtype)
    # token_type_ids and other integer inputs: zero is a valid index for every embedding table.
    return np.zeros(shape, dtype=dtype)


@functools.lru_cache(maxsize=16)
def token_id_range(path: str, input_name: str) -> tuple[int, int]:
    """[low, high) of the token ids fed to `input_name`: TOKEN_ID_RANGE within the vocabulary,
    whose size is the row count of the embedding table the ids index (a Gather whose data is an
    initializer). A graph where no such table is found gets TOKEN_ID_RANGE."""
    vocab = vocabulary_size(path, input_name)
    if vocab is None or vocab >= TOKEN_ID_RANGE[1]:
        return TOKEN_ID_RANGE
    return min(TOKEN_ID_RANGE[0], vocab // 2), vocab


def vocabulary_size(path: str, input_name: str) -> int | None:
    from compress.onnx.structure import load_structure  # onnx: only text models get here

    graph = load_structure(path).graph
    tables = {init.name: init.dims[0] for init in graph.initializer if len(init.dims) == 2}
    names = {input_name}
    for node in graph.node:  # nodes are in topological order
        if node.op_type in _ID_PASSTHROUGH and node.input and node.input[0] in names:
            names.update(node.output)
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in names and node.input[0] in tables:
            return int(tables[node.input[0]])
    return None
