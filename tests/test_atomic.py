from __future__ import annotations

import os

import pytest

from compress.atomic import atomic_path, write_text
from compress.errors import UsageError


def test_interrupted_write_leaves_nothing(tmp_path):
    write_text(tmp_path / "report.json", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert (tmp_path / "report.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_files_get_normal_permissions(tmp_path):
    path = write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_unwritable_folder_is_usage_error():
    with pytest.raises(UsageError, match="output folder"):
        write_text("/proc/nope/a.txt", "x")


def test_temp_files_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".bench.json.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".bench.json.{os.getppid()}.def456.tmp"  # a running process: maybe writing now
    other = tmp_path / f".report.json.{dead.stdout.strip()}.ghi789.tmp"  # another file's: not this write's business
    for path in (stale, live, other):
        path.write_text("half")
    write_text(tmp_path / "bench.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bench.json", live.name, other.name])
