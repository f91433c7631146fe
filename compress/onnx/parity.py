"""ONNX parity: onnxruntime against torch on the same fixed inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from compress.data.specs import Dataset
from compress.metrics import cosine
from compress.model import Model
from compress.onnx.session import open_session
from compress.onnx.outputs import onnx_outputs
from compress.predict import torch_outputs


@dataclass(frozen=True)
class Parity:
    """torch vs onnxruntime. The tolerance is absolute for outputs within [-1, 1] and relative to
    the largest output magnitude beyond that (`allowed`), as float32 rounding grows with the values:
    1e-4 holds a normalised embedding to 1e-4 and logits of 50 to 5e-3."""

    max_abs_diff: float
    cosine_min: float
    samples: int
    tolerance: float
    output_scale: float

    @property
    def allowed(self) -> float:
        return self.tolerance * self.output_scale

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.allowed

    def to_dict(self) -> dict:
        return {**asdict(self), "allowed": self.allowed, "passed": self.passed}


def check_parity(model: Model, onnx_path: str | Path, data: Dataset, tolerance: float) -> Parity:
    expected = torch_outputs(model, data)
    got = onnx_outputs(open_session(onnx_path), data)
    return Parity(
        max_abs_diff=(expected - got).abs().max().item(),
        cosine_min=cosine(expected, got).min().item(),
        samples=len(data),
        tolerance=tolerance,
        output_scale=max(1.0, expected.abs().max().item()),
    )
