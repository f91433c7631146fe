from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.errors import UsageError
from compress.resume import open_checkpoints
from compress.train import FitConfig, fit

MADE_FROM = {"model": {"ref": "digits"}, "recipe": {"steps": {"1.distill": {"lr": 0.002}}}, "seed": 0}


def _quiet(_: str) -> None:
    pass


def _fit_saves(checkpoints) -> None:
    """Step 1's fit, saving into the run's checkpoints."""
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    fit(nn.Linear(4, 1), lambda m, b: F.mse_loss(m(*b.inputs), b.labels), Dataset("d", (x,), x.sum(1, keepdim=True)),
        FitConfig(steps=4, lr=1e-2, batch_size=16), checkpointing=checkpoints.for_step(0, "distill"))


def test_a_fresh_run_discards_an_earlier_runs_checkpoints_and_writes_nothing_before_a_fit_saves(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    folder.mkdir()
    (folder / "step-1-distill.pt").write_bytes(b"an earlier run's")
    logged = []
    checkpoints = open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=logged.append)
    assert not folder.exists()
    assert "removed the checkpoints of an earlier unfinished run" in logged[0]
    fit = checkpoints.for_step(0, "distill")
    assert (fit.path, fit.every, fit.resume, fit.identity) == (folder / "step-1-distill.pt", 10, False, {"step": "1.distill", "run": MADE_FROM})
    checkpoints.close_unfinished(logged.append)
    assert len(logged) == 1  # nothing saved: nothing to resume, nothing said


def test_resume_refuses_a_missing_checkpoint_and_other_settings_naming_them(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    with pytest.raises(UsageError, match="holds no checkpoint: no run into this --out was interrupted"):
        open_checkpoints(folder, MADE_FROM, every=10, resume=True, log=_quiet)
    _fit_saves(open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=_quiet))
    changed = {**MADE_FROM, "recipe": {"steps": {"1.distill": {"lr": 0.01}}}, "seed": 3}
    with pytest.raises(UsageError, match=r"other settings \(recipe.steps.1.distill.lr, seed differ\)"):
        open_checkpoints(folder, changed, every=10, resume=True, log=_quiet)
    logged = []
    resumed = open_checkpoints(folder, MADE_FROM, every=10, resume=True, log=logged.append)
    assert resumed.resume and "resuming the interrupted run" in logged[0]
    resumed.close_unfinished(logged.append)
    assert "--resume continues this run" in logged[1]


def test_no_checkpoints_cannot_be_resumed(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    assert open_checkpoints(folder, MADE_FROM, every=0, resume=False, log=_quiet) is None
    with pytest.raises(UsageError, match="--checkpoint-every: 0: turns checkpoints off"):
        open_checkpoints(folder, MADE_FROM, every=0, resume=True, log=_quiet)
