"""Every pass in the PASSES table keeps the contract: its output is saved as data and reloads to
identical outputs, and what it produces is what the table says it gives."""

from __future__ import annotations

import pytest
import torch

from compress.config import StrictConfig
from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.model import save
from compress.passes import PASSES
from compress.pipeline import run
from compress.recipe import make_step

# Options that keep each pass quick on the tiny model; a pass not listed runs with its defaults.
FAST_OPTIONS: dict[str, dict] = {
    "bench": {"min_calls": 20, "warmup": 0, "max_seconds": 0.5},
    "ptq": {"calibration_samples": 32, "time_check": False, "min_fidelity": 0},
    "distill": {"data": "digits:train", "steps": 2, "batch_size": 8},
    "synthesize": {"images": 4, "batch_size": 2, "steps": 1},
}


def _steps_for(name: str) -> list:
    """The pass, after the steps that give what it needs (an ONNX file: export)."""
    before = [make_step("export", {})] if "onnx" in PASSES[name].needs else []
    return [*before, make_step(name, FAST_OPTIONS.get(name, {}))]


@pytest.mark.parametrize("name", list(PASSES))
def test_every_pass_output_saves_and_reloads_to_identical_outputs(name, tmp_path):
    model = load("tiny_models:cnn", input_shapes=((1, 1, 32, 32),))  # digits-sized, so digits data fits
    ctx = Context(run_dir=tmp_path, teacher=model.copy(), data={"heldout": load_data("digits:test").head(32)},
                  heldout_spec="digits:test")
    record = run(model, _steps_for(name), ctx)
    save(record.model, tmp_path / "saved")
    again = load(str(tmp_path / "saved"))
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again(x), record.model(x))
    assert again.edits == record.model.edits
    assert set(record.steps[-1].produced) <= PASSES[name].gives


def test_every_pass_declares_its_contract():
    for name, spec in PASSES.items():
        assert spec.needs <= {"torch", "onnx"}, name
        assert spec.gives <= {"onnx", "parity", "latency"}, name
        assert spec.changes in ("nothing", "torch", "onnx"), name
        assert issubclass(spec.config, StrictConfig), name  # frozen, extra="forbid", strict
