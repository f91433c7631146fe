"""`compress run --resume`: a run killed with SIGKILL after its first checkpoint continues and ends
with the weights of the uninterrupted run; a changed recipe or a missing checkpoint is refused; a
non-finite loss stops the run at its last good checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import pytest
from safetensors.torch import load_file, save_file

from compress.cli.main import cli
from cli_checks import one_line_error

TESTS = Path(__file__).resolve().parents[1]
TINY = ["run", "--model", "tiny_models:interruptible_cnn", "--input-shape", "1,1,32,32", "--data", "digits:test", "--checkpoint-every", "10"]
STEPS = ["prune", "--ratio", "0.5", "--round-to", "1", "distill", "--data", "digits:train", "--steps", "60", "--eval-every", "20"]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def _assert_same_weights(got: Path, expected: Path) -> None:
    got, expected = _weights(got), _weights(expected)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def _resumed_at(stderr: str) -> int:
    return int(stderr.split("fit: resuming at step ")[1].split("/")[0])


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("whole") / "x"
    result = CliRunner().invoke(cli, [*TINY, "--out", str(out), *STEPS])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["x"]  # a complete run keeps no checkpoints
    return out


def test_an_interrupted_run_resumes_to_the_weights_of_the_uninterrupted_one(runner, tmp_path, whole, monkeypatch):
    out = tmp_path / "x"
    monkeypatch.setenv("TINY_INTERRUPT_AT", "25")  # Ctrl-C in distill's step 25
    interrupted = runner.invoke(cli, [*TINY, "--out", str(out), *STEPS])
    assert interrupted.exit_code == 130, interrupted.stderr
    assert f"checkpoints kept in {tmp_path / '.x.checkpoints'}" in interrupted.stderr
    monkeypatch.delenv("TINY_INTERRUPT_AT")

    changed = runner.invoke(cli, [*TINY, "--seed", "1", "--out", str(out), "--resume", *STEPS[:-1], "10"])
    one_line_error(changed, 2, "--resume", "other settings (model.seed, recipe.steps.2.distill.eval_every, seed differ)",
                   "run without --resume to start again")
    resumed = runner.invoke(cli, [*TINY, "--out", str(out), "--resume", *STEPS])
    assert resumed.exit_code == 0, resumed.stderr
    assert _resumed_at(resumed.stderr) == 20
    _assert_same_weights(out, whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]

    again = runner.invoke(cli, [*TINY, "--out", str(out), "--resume", *STEPS])
    one_line_error(again, 2, "--resume", ".x.checkpoints", "holds no checkpoint", "run without --resume")


@pytest.mark.slow
def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_same_weights(runner, tmp_path, whole):
    """SIGKILL: no handler runs, the checkpoints are all that is left. Each training step sleeps
    30 ms, so the kill lands between checkpoints 10 and 60."""
    out = tmp_path / "x"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "TINY_TRAIN_SLEEP_S": "0.03"}
    run = subprocess.Popen([sys.executable, "-m", "compress.cli.main", *TINY, "--out", str(out), *STEPS], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / ".x.checkpoints" / "step-2-distill.pt"
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and run.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
    finally:
        run.send_signal(signal.SIGKILL)
        _, stderr = run.communicate()
    assert run.returncode == -signal.SIGKILL, stderr
    assert not out.exists()
    resumed = runner.invoke(cli, [*TINY, "--out", str(out), "--resume", *STEPS])
    assert resumed.exit_code == 0, resumed.stderr
    assert 10 <= _resumed_at(resumed.stderr) < 60
    _assert_same_weights(out, whole)


def test_a_non_finite_loss_stops_at_the_last_good_checkpoint(runner, tmp_path):
    """Training data with one NaN pixel: the batch holding it gives a NaN loss, the run fails with
    the step and the loss, and the checkpoint before it stays for inspection."""
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    images[40, 0, 3, 3] = float("nan")
    save_file({"input": images}, tmp_path / "bad.safetensors")
    out = tmp_path / "x"
    result = runner.invoke(cli, [*TINY, "--out", str(out), "--checkpoint-every", "1", "distill", "--data", f"tensors:{tmp_path / 'bad.safetensors'}",
                                 "--steps", "20", "--batch-size", "4", "--validation-fraction", "0"])
    message = one_line_error(result, 1, "step 1 (distill)", "training loss became nan at step", "stopped at the last good checkpoint, step")
    failed_at = int(message.split("nan at step ")[1].split(" ")[0])
    last_good = int(message.split("last good checkpoint, step ")[1].split(" ")[0])
    assert last_good == failed_at - 1
    assert not out.exists()
    checkpoint = torch.load(out.with_name(".x.checkpoints") / "step-1-distill.pt", weights_only=True)
    assert checkpoint["step"] == last_good
    assert all(torch.isfinite(v).all() for v in checkpoint["student"].values())
