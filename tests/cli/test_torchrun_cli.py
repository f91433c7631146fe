"""`torchrun --nproc_per_node=2 -m compress.cli.main run ...` on CPU (gloo): the run's result
matches the 1-process run's; only rank 0 writes and prints; too many processes for the batch are
refused with one line from compress (torchrun adds its own report of the failed workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compress.cli.main import cli

TESTS = Path(__file__).resolve().parents[1]
# A model without BatchNorm or dropout: each input's gradient is its own, so the two ranks'
# averaged gradients are the whole batch's, to float rounding.
RUN = ["run", "--model", "tiny_models:plain_cnn", "--input-shape", "1,1,32,32", "--data", "digits:test", "--checkpoint-every", "10"]
STEPS = ["prune", "--ratio", "0.5", "--round-to", "1", "distill", "--data", "digits:train", "--steps", "20", "--eval-every", "10", "export"]

pytestmark = pytest.mark.slow  # two torch processes start: about 25 s on a busy 2-core machine


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "compress.cli.main", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_give_the_one_process_result_and_only_rank_0_writes(runner, tmp_path):
    one = runner.invoke(cli, [*RUN, "--out", str(tmp_path / "one"), *STEPS])
    assert one.exit_code == 0, one.stderr
    two = _torchrun(*RUN, "--out", str(tmp_path / "two"), *STEPS)
    assert two.returncode == 0, two.stderr
    expected, got = load_file(tmp_path / "one" / "model" / "model.safetensors"), load_file(tmp_path / "two" / "model" / "model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert two.stdout.count("summary") == 1 and two.stderr.count("[1/3] prune") == 1  # rank 1 printed nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no lock, scratch or checkpoints left
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_more_processes_than_rows_of_a_batch_are_refused_in_one_line(tmp_path):
    refused = _torchrun(*RUN, "--out", str(tmp_path / "x"), "distill", "--data", "digits:train", "--steps", "5", "--batch-size", "3")
    assert refused.returncode != 0
    messages = [line for line in refused.stderr.splitlines() if line.startswith("compress: ")]
    assert messages == ["compress: torchrun --nproc_per_node: 2: does not divide the 3 rows of each training batch (each process trains on "
                        "an equal share of every batch); use a --batch-size that is a multiple of 2"], refused.stderr
    assert "exitcode  : 2" in refused.stderr.split("Root Cause")[1]  # the first rank to stop exits 2 (torchrun itself exits 1)
    assert not (tmp_path / "x").exists()


def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """Ctrl-C on both ranks in distill's step 25 (TINY_INTERRUPT_AT): rank 0's checkpoint of step
    20 stays, and `--resume` under torchrun ends with the uninterrupted 2-process run's weights."""
    run = ["run", "--model", "tiny_models:interruptible_cnn", "--input-shape", "1,1,32,32", "--data", "digits:test", "--checkpoint-every", "10"]
    steps = ["prune", "--ratio", "0.5", "--round-to", "1", "distill", "--data", "digits:train", "--steps", "40", "--eval-every", "20"]
    whole = _torchrun(*run, "--out", str(tmp_path / "whole"), *steps)
    assert whole.returncode == 0, whole.stderr
    monkeypatch.setenv("TINY_INTERRUPT_AT", "25")
    interrupted = _torchrun(*run, "--out", str(tmp_path / "x"), *steps)
    monkeypatch.delenv("TINY_INTERRUPT_AT")
    assert interrupted.returncode != 0 and (tmp_path / ".x.checkpoints" / "step-2-distill.pt").exists(), interrupted.stderr
    resumed = _torchrun(*run, "--out", str(tmp_path / "x"), "--resume", *steps)
    assert resumed.returncode == 0, resumed.stderr
    assert "fit: resuming at step 20/40" in resumed.stderr
    expected, got = load_file(tmp_path / "whole" / "model" / "model.safetensors"), load_file(tmp_path / "x" / "model" / "model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
