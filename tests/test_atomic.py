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
