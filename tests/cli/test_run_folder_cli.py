"""A run folder you can trust, at the CLI: a failed, interrupted or terminated run leaves the
previous result whole; a second run into a busy folder is refused naming the holder's pid;
report.json vouches for every file by sha256 and `compress gate` checks them; files are 0644."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.cli.main import cli
from compress.passes import PASSES
from cli_checks import one_line_error

TINY = ["run", "--model", "tiny_models:cnn"]
TESTS = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def good_run(runner, tmp_path):
    out = tmp_path / "x"
    result = runner.invoke(cli, [*TINY, "--out", str(out), "export"])
    assert result.exit_code == 0, result.stderr
    return out


def test_report_names_every_file_with_its_sha256_and_relative_paths(good_run):
    report = json.loads((good_run / "report.json").read_text())
    assert set(report["files"]) == set(_snapshot(good_run)) - {"report.json"}
    assert {"model.onnx", "report.md", "model/model.json", "model/model.safetensors"} <= set(report["files"])
    assert report["steps"][0]["artifacts"]["onnx"] == "model.onnx" and report["model"]["saved"] == "model"


def test_every_file_of_a_run_gets_the_usual_permissions(good_run):
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.relative_to(good_run).as_posix(): p.stat().st_mode & 0o777 for p in good_run.rglob("*") if p.is_file()}
    assert modes["model/model.safetensors"] == 0o666 & ~mask
    assert set(modes.values()) == {0o666 & ~mask}
    assert good_run.stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_failed_run_leaves_the_previous_result_and_gate_still_checks_it(runner, good_run):
    before = _snapshot(good_run)
    failed = runner.invoke(cli, ["run", "--model", "tiny_models:nan_cnn", "--out", str(good_run), "export"])
    assert failed.exit_code == 1, failed.stderr
    assert _snapshot(good_run) == before
    assert sorted(p.name for p in good_run.parent.iterdir()) == ["x"]
    gate = runner.invoke(cli, ["gate", str(good_run / "report.json"), "--require-parity"])
    assert gate.exit_code == 0, gate.stderr


def test_an_interrupted_run_leaves_the_previous_result(runner, good_run, monkeypatch):
    before = _snapshot(good_run)

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setitem(PASSES, "export", PASSES["export"]._replace(fn=interrupted))
    result = runner.invoke(cli, [*TINY, "--out", str(good_run), "export"])
    one_line_error(result, 130, "interrupted")
    assert _snapshot(good_run) == before
    assert sorted(p.name for p in good_run.parent.iterdir()) == ["x"]


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_gate_refuses_a_folder_whose_file_changed(runner, good_run, change):
    if change == "edit":
        (good_run / "model.onnx").write_bytes(b"not the exported model")
    else:
        (good_run / "model" / "model.safetensors").unlink()
    result = runner.invoke(cli, ["gate", str(good_run / "report.json"), "--require-parity"])
    name = "model.onnx" if change == "edit" else "model/model.safetensors"
    one_line_error(result, 2, "run folder file", name, "changed after report.json" if change == "edit" else "is missing")


def test_a_folder_holding_other_files_is_refused_before_loading(runner, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    result = runner.invoke(cli, ["run", "--model", "tiny_models:interrupted", "--out", str(tmp_path / "mine"), "export"])
    one_line_error(result, 2, "output folder", "not a compress run folder")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def _compress(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "compress.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_run_is_refused_naming_the_pid_and_sigterm_cleans_up(runner, good_run):
    """One slow run holds the folder; a second is refused with its pid; SIGTERM ends the first
    cleanly (exit 143, staging and lock removed, the previous result untouched)."""
    before = _snapshot(good_run)
    slow = _compress("run", "--model", "tiny_models:sleepy_cnn", "--out", str(good_run), "export")
    try:
        _wait_for(lambda: any(p.name.startswith(".x.staging.") for p in good_run.parent.iterdir()))
        second = runner.invoke(cli, [*TINY, "--out", str(good_run), "export"])
        one_line_error(second, 2, "output folder", f"in use by another compress run (pid {slow.pid})")
        slow.send_signal(signal.SIGTERM)
        _, stderr = slow.communicate(timeout=60)
    finally:
        slow.kill()
        slow.communicate()
    assert slow.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "compress: terminated (SIGTERM); no partial output was left in place"
    assert _snapshot(good_run) == before
    assert sorted(p.name for p in good_run.parent.iterdir()) == ["x"]


def test_a_killed_run_leaves_a_lock_and_staging_that_the_next_run_takes_over(runner, good_run):
    slow = _compress("run", "--model", "tiny_models:sleepy_cnn", "--out", str(good_run), "export")
    try:
        _wait_for(lambda: any(p.name.startswith(".x.staging.") for p in good_run.parent.iterdir()))
    finally:
        slow.kill()  # SIGKILL: no handler runs
        slow.communicate()
    assert (good_run.parent / ".x.lock").read_text().strip() == str(slow.pid)
    result = runner.invoke(cli, [*TINY, "--out", str(good_run), "export"])
    assert result.exit_code == 0, result.stderr
    assert f"from pid {slow.pid}" in result.stderr and "removed 1 leftover(s)" in result.stderr
    assert sorted(p.name for p in good_run.parent.iterdir()) == ["x"]


def test_no_file_of_a_run_names_its_staging_folder(runner, tmp_path):
    out = tmp_path / "x"
    result = runner.invoke(cli, [*TINY, "--out", str(out), "export", "bench", "--warmup", "0", "--max-seconds", "0.2"])
    assert result.exit_code == 0, result.stderr
    for path in (out / "report.json", out / "bench.json", out / "report.md"):
        assert ".staging." not in path.read_text(), path.name
    assert {m["path"] for m in json.loads((out / "bench.json").read_text())["models"].values()} <= {"model.onnx", "original.onnx"}


def test_gate_refuses_a_report_edited_after_the_run(runner, good_run):
    report = json.loads((good_run / "report.json").read_text())
    assert len(report["report_sha256"]) == 64
    report["summary"]["parity"]["passed"] = not report["summary"]["parity"]["passed"]
    (good_run / "report.json").write_text(json.dumps(report, indent=2))
    result = runner.invoke(cli, ["gate", str(good_run / "report.json"), "--require-parity"])
    one_line_error(result, 2, "report", "was edited after compress wrote it")
