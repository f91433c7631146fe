"""compress.context: data for a pass's role, never the held-out data."""

from __future__ import annotations

import pytest
import torch

from compress.context import Context
from compress.errors import UsageError
from compress.loading.checkpoint import load


def test_training_on_the_heldout_spec_is_refused(tmp_path) -> None:
    ctx = Context(run_dir=tmp_path, teacher=load("tiny_models:cnn"), heldout_spec="digits:test")
    with pytest.raises(UsageError) as info:
        ctx.dataset("digits:test", "train")
    assert info.value.thing == "train data" and "digits:train" in info.value.fix
    train = ctx.dataset("digits:train", "train")
    assert len(train) == 1437 and train.labels is not None and train.inputs[0].dtype == torch.float32


def test_a_missing_role_names_the_pass_that_needs_it(tmp_path) -> None:
    ctx = Context(run_dir=tmp_path, teacher=load("tiny_models:cnn"))
    with pytest.raises(UsageError) as info:
        ctx.source("calibration", "ptq")
    assert info.value.thing == "ptq data"
