from __future__ import annotations

import pytest

from compress.errors import UsageError
from compress.resume import MANIFEST, open_checkpoints

MADE_FROM = {"model": {"ref": "digits"}, "recipe": {"steps": {"1.distill": {"lr": 0.002}}}, "seed": 0}


def _quiet(_: str) -> None:
    pass


def test_a_fresh_run_records_what_it_was_made_from_and_discards_an_earlier_runs_checkpoints(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    folder.mkdir()
    (folder / "step-1-distill.pt").write_bytes(b"an earlier run's")
    logged = []
    checkpoints = open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=logged.append)
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST]
    assert "removed the checkpoints of an earlier unfinished run" in logged[0]
    fit = checkpoints.for_step(0, "distill")
    assert (fit.path, fit.every, fit.resume, fit.identity) == (folder / "step-1-distill.pt", 10, False, {"step": "1.distill"})


def test_resume_refuses_other_settings_naming_them_and_a_missing_folder(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    with pytest.raises(UsageError, match="does not exist: no run into this --out was interrupted"):
        open_checkpoints(folder, MADE_FROM, every=10, resume=True, log=_quiet)
    open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=_quiet)
    changed = {**MADE_FROM, "recipe": {"steps": {"1.distill": {"lr": 0.01}}}, "seed": 3}
    with pytest.raises(UsageError, match=r"other settings \(recipe.steps.1.distill.lr, seed differ\)"):
        open_checkpoints(folder, changed, every=10, resume=True, log=_quiet)
    assert open_checkpoints(folder, MADE_FROM, every=10, resume=True, log=_quiet).resume


def test_no_checkpoints_writes_nothing_and_cannot_be_resumed(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    assert open_checkpoints(folder, MADE_FROM, every=0, resume=False, log=_quiet) is None
    assert not folder.exists()
    with pytest.raises(UsageError, match="--checkpoint-every: 0: turns checkpoints off"):
        open_checkpoints(folder, MADE_FROM, every=0, resume=True, log=_quiet)


def test_an_unfinished_run_keeps_its_folder_only_when_a_fit_saved_something(tmp_path):
    folder = tmp_path / ".x.checkpoints"
    checkpoints = open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=_quiet)
    checkpoints.close_unfinished(_quiet)
    assert not folder.exists()  # interrupted before any fit saved: nothing to resume
    checkpoints = open_checkpoints(folder, MADE_FROM, every=10, resume=False, log=_quiet)
    (folder / "step-2-distill.pt").write_bytes(b"state")
    logged = []
    checkpoints.close_unfinished(logged.append)
    assert folder.is_dir() and "--resume continues this run" in logged[0]
