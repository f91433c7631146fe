"""ONNX parity: onnxruntime against torch on the same inputs.

The export fixes nothing but what the model fixes: a graph traced from `x.view(1, -1)` works at
the example's batch size only. So parity always runs on probes as well: random inputs at two batch
sizes (and, for token inputs, two sequence lengths), seeded, besides any held-out data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.metrics import cosine
from compress.model import Model
from compress.onnx.session import open_session
from compress.onnx.outputs import onnx_outputs
from compress.predict import torch_outputs

# Batch sizes of the probes: neither is 1, the usual example batch, and they differ from each other.
PROBE_BATCHES = (2, 3)


@dataclass(frozen=True)
class Parity:
    """torch vs onnxruntime. The tolerance is absolute for outputs within [-1, 1] and relative to
    the largest output magnitude beyond that (`allowed`), as float32 rounding grows with the values:
    1e-4 holds a normalised embedding to 1e-4 and logits of 50 to 5e-3. Non-finite outputs (NaN,
    inf) on either side fail, whatever the difference."""

    max_abs_diff: float
    cosine_min: float
    samples: int
    tolerance: float
    output_scale: float
    nonfinite_torch: int = 0
    nonfinite_onnx: int = 0
    checked_on: tuple[str, ...] = ()

    @property
    def allowed(self) -> float:
        return self.tolerance * self.output_scale

    @property
    def passed(self) -> bool:
        return self.nonfinite_torch == 0 and self.nonfinite_onnx == 0 and self.max_abs_diff <= self.allowed

    def to_dict(self) -> dict:
        return {**asdict(self), "allowed": self.allowed, "passed": self.passed}


def check_parity(model: Model, onnx_path: str | Path, data: Dataset | Sequence[Dataset], tolerance: float) -> Parity:
    """Compare on every dataset. A model that cannot run a dataset in torch, or a graph that
    onnxruntime cannot run on it, or outputs of another shape, fail the run (RunFailed) naming it."""
    session = open_session(onnx_path)
    datasets = [data] if isinstance(data, Dataset) else list(data)
    expected, got = [], []
    for batch in datasets:
        ours = _run(lambda: torch_outputs(model, batch), "torch", model, batch)
        theirs = _run(lambda: onnx_outputs(session, batch), "onnxruntime", model, batch)
        if ours.shape[0] != len(batch):
            raise RunFailed(f"torch gives {ours.shape[0]} output row(s) for {batch.name}: {model.name} fixes the batch size "
                            "(e.g. x.view(1, -1)); make it batch-independent (x.flatten(1))")
        if theirs.shape != ours.shape:
            raise RunFailed(f"onnxruntime gives shape {list(theirs.shape)} on {batch.name}, torch {list(ours.shape)} "
                            f"({onnx_path}): the exported graph fixes a size the model computes")
        expected.append(ours.flatten(1))
        got.append(theirs.flatten(1))
    width = max(x.shape[1] for x in expected)
    expected = torch.cat([_pad(x, width) for x in expected])
    got = torch.cat([_pad(x, width) for x in got])
    finite = torch.isfinite(expected) & torch.isfinite(got)
    diff = (expected - got).abs()[finite]
    return Parity(
        max_abs_diff=diff.max().item() if diff.numel() else 0.0,
        cosine_min=cosine(torch.where(finite, expected, 0), torch.where(finite, got, 0)).min().item(),
        samples=sum(len(d) for d in datasets),
        tolerance=tolerance,
        output_scale=max(1.0, expected[torch.isfinite(expected)].abs().max().item() if torch.isfinite(expected).any() else 1.0),
        nonfinite_torch=int((~torch.isfinite(expected)).sum()),
        nonfinite_onnx=int((~torch.isfinite(got)).sum()),
        checked_on=tuple(d.name for d in datasets),
    )


def _run(outputs, runtime: str, model: Model, batch: Dataset) -> torch.Tensor:
    try:
        return outputs()
    except (RunFailed, UsageError, KeyboardInterrupt):  # UsageError: data the graph's fixed sizes refuse
        raise
    except Exception as exc:  # torch and onnxruntime fail in many types; the batch that broke them is what matters
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunFailed(f"{runtime} cannot run {model.name} on {batch.name} ({type(exc).__name__}: {cause}); "
                        "the model must take any batch size (and any sequence length for text), e.g. x.flatten(1) "
                        "rather than x.view(1, -1)") from exc


def _pad(rows: torch.Tensor, width: int) -> torch.Tensor:
    """Rows of a narrower probe (a shorter sequence) padded with zeros to stack with the rest."""
    return torch.nn.functional.pad(rows, (0, width - rows.shape[1]))


def probes(model: Model, seed: int) -> list[Dataset]:
    """Random inputs shaped like the example inputs at two batch sizes; token inputs also at a
    shorter sequence length. Token ids are drawn from the example's own ids (so within the
    vocabulary), masks are padded prefixes; everything is seeded."""
    generator = torch.Generator().manual_seed(seed)
    lengths = _sequence_lengths(model)
    found = []
    for batch in PROBE_BATCHES:
        for length in lengths:
            inputs = tuple(_random_like(name, x, batch, length, generator) for name, x in zip(model.input_names, model.example_inputs))
            where = f"random inputs, batch {batch}" + (f", sequence length {length}" if length is not None else "")
            found.append(Dataset(where, inputs))
    return found


def _sequence_lengths(model: Model) -> tuple[int | None, ...]:
    tokens = [x for x in model.example_inputs if _is_tokens(x)]
    if not tokens:
        return (None,)
    full = tokens[0].shape[1]
    return (full, max(1, full // 2)) if full > 1 else (full,)


def _is_tokens(x: torch.Tensor) -> bool:
    return not x.is_floating_point() and x.dim() == 2


def _random_like(name: str, example: torch.Tensor, batch: int, length: int | None, generator: torch.Generator) -> torch.Tensor:
    shape = (batch, *example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=generator, dtype=example.dtype)
    if example.dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    if _is_tokens(example) and length is not None:
        shape = (batch, length)
    if "mask" in name and len(shape) == 2:  # each row: a random number of real tokens, then padding
        real = torch.randint(1, shape[1] + 1, (batch, 1), generator=generator)
        return (torch.arange(shape[1]).expand(shape) < real).to(example.dtype)
    values = example.flatten().unique()
    return values[torch.randint(len(values), shape, generator=generator)]
