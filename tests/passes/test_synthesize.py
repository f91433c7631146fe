"""The `synthesize` pass: the model passes through unchanged and the set becomes the run's
`synthetic` data source, which later steps read through the Context."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from compress.context import Context
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.pipeline import run
from compress.recipe import make_step

FAST = {"images": 8, "batch_size": 4, "steps": 2}



def test_the_set_becomes_the_synthetic_data_source(tmp_path):
    model = load("tiny_models:cnn")
    ctx = Context(run_dir=tmp_path, teacher=model.copy())
    record = run(model, [make_step("synthesize", FAST)], ctx)
    assert record.model is model  # nothing changed, nothing to re-measure
    synthetic = ctx.source("synthetic", "test")
    assert len(synthetic) == 8 and synthetic.inputs[0].shape == (8, 1, 8, 8)
    assert [len(b) for b in synthetic.batches(3)] == [3, 3, 2]
    assert ctx.artifacts["synthetic"] == tmp_path / "synthetic.safetensors"
    assert record.steps[0].figures["classes"] == 10


def test_adi_uses_the_current_model_and_skips_the_cache(tmp_path):
    model = load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),))
    ctx = Context(run_dir=tmp_path, teacher=load("tiny_models:cnn"))
    record = run(model, [make_step("synthesize", {**FAST, "adi_weight": 0.5})], ctx)
    assert record.steps[0].figures["reused"] is False
    # A set shaped by a student is not keyed by the teacher alone, so it is not cached.
    assert not any((Path(os.environ["COMPRESS_CACHE_DIR"]) / "synthetic").glob("*.safetensors"))
    assert torch.isfinite(ctx.data["synthetic"].inputs[0]).all()


def test_a_teacher_without_batchnorm_is_refused(tmp_path):
    model = load("tiny_models:cnn_without_bn")
    with pytest.raises(UsageError, match="BatchNorm"):
        run(model, [make_step("synthesize", FAST)], Context(run_dir=tmp_path, teacher=model.copy()))
