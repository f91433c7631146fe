"""compress.rundir: staging + swap, the lock (live holder refused, killed holder taken over), and
leftovers of killed runs removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compress.errors import UsageError
from compress.rundir import lock, run_folder


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_a_complete_run_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "x"
    with run_folder(out) as staging:
        (staging / "report.json").write_text("{}")
        (staging / "old.onnx").write_text("1")
    with run_folder(out) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".x.staging.")
        (staging / "report.json").write_text("{}")
        (staging / "new.onnx").write_text("2")
    assert _files(out) == ["new.onnx", "report.json"]  # nothing of the first run is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no lock, staging or old folder


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_failed_or_interrupted_run_leaves_the_previous_result(tmp_path, error):
    out = tmp_path / "x"
    with run_folder(out) as staging:
        (staging / "report.json").write_text("first")
    with pytest.raises(error):
        with run_folder(out) as staging:
            (staging / "report.json").write_text("second")
            raise error
    assert (out / "report.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a compress run folder"):
        with run_folder(tmp_path):
            pass
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_current_folder_is_never_replaced(tmp_path, monkeypatch):
    with run_folder(tmp_path / "x") as staging:
        (staging / "report.json").write_text("{}")
    (tmp_path / "x" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "x" / "sub")
    with pytest.raises(UsageError, match="is the current folder or holds it"):
        with run_folder(tmp_path / "x"):
            pass


HOLD = """
import sys, time
from pathlib import Path
from compress.rundir import lock
with lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_live_holder_is_refused_naming_its_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "x")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"in use by another compress run \\(pid {holder.pid}\\)"):
            with lock(tmp_path / "x"):
                pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The kernel dropped the killed holder's lock: the file with its pid is taken over.
    assert (tmp_path / ".x.lock").read_text().strip() == str(holder.pid)
    messages = []
    with lock(tmp_path / "x", messages.append):
        assert (tmp_path / ".x.lock").read_text().strip() == str(os.getpid())
    assert f"from pid {holder.pid}" in messages[0]
    assert not (tmp_path / ".x.lock").exists()


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "x"
    with run_folder(out) as staging:
        (staging / "report.json").write_text("{}")
    (tmp_path / ".x.staging.abc123").mkdir()
    (tmp_path / ".x.staging.abc123" / "model.onnx").write_text("half")
    (tmp_path / ".x.old.999").mkdir()
    (out / ".report.json.k2j3.tmp").write_text("half")
    (tmp_path / ".y.staging.zzz").mkdir()  # another folder's run: not ours to remove
    messages = []
    with run_folder(out, messages.append) as staging:
        (staging / "report.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.staging.zzz", "x"]
    assert "removed 3 leftover(s)" in messages[0]
