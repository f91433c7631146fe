"""Calibration batches for onnxruntime's quantizer, read from a `Dataset`.

Text is sorted by length and each batch cut to its longest real sentence (`Dataset.padded_batches`,
as for every other inference over text): columns that are padding in every row of a batch never
reach the range statistics, so padded positions (and the -3.4e38 that an attention mask adds to
their scores) do not widen the activation ranges (research/baselines.md: static QDQ over MiniLM
with padded calibration collapsed to cosine 0.35), and sorting leaves few such positions in a
batch. Integer inputs without a known mask (a tensors file) are cut by the input named "mask".
"""

from __future__ import annotations

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from compress.data.specs import Dataset


class DatasetReader(CalibrationDataReader):
    """Feeds `data` to onnxruntime's calibrator in batches, inputs named as the graph names them."""

    def __init__(self, data: Dataset, input_names: list[str], batch_size: int) -> None:
        self.feeds = [_feeds(inputs, input_names) for _, inputs in data.padded_batches(batch_size)]
        self.rows = len(data)
        self._next = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self.feeds)


def _feeds(inputs: tuple[torch.Tensor, ...], input_names: list[str]) -> dict[str, np.ndarray]:
    length = real_length(inputs, input_names)
    return {name: (x[:, :length] if length is not None else x).numpy() for name, x in zip(input_names, inputs)}


def real_length(inputs: tuple[torch.Tensor, ...], input_names: list[str]) -> int | None:
    """Longest unpadded sequence in a text batch (from its attention mask); None for other inputs."""
    for name, x in zip(input_names, inputs):
        if "mask" in name.lower() and x.dim() == 2 and not x.is_floating_point():
            lengths = x.ne(0).sum(dim=1)
            return max(1, int(lengths.max()))
    return None


def text_inputs(inputs: tuple[torch.Tensor, ...]) -> bool:
    """Integer [batch, sequence] inputs mean token ids and masks: a text model."""
    return any(not x.is_floating_point() and x.dim() == 2 for x in inputs)
