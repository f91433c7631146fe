"""sha256 of weights, of files and of a run folder's files: what report.json records and `compress gate`
checks, so a report never vouches for a file that changed after it was written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import UsageError

if TYPE_CHECKING:
    import torch


def state_sha256(module: torch.nn.Module) -> str:
    """A fingerprint of the weights themselves, whatever file they came from (a synthetic set
    records its teacher's, so it is never used with another)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy())  # the array's own buffer: no copy of the weights
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: Path, exclude: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `folder` by its relative path (POSIX separators), sorted."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p != exclude}


def check_files(files: object, folder: Path) -> None:
    """Every file a report names must be there, unchanged; else a UsageError names the file."""
    if not isinstance(files, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise UsageError("report files", type(files).__name__, "must map file names to sha256 digests; regenerate the report with compress run")
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            raise UsageError("run folder file", path, "is missing, but report.json vouches for it; rerun compress run")
        actual = file_sha256(path)
        if actual != recorded:
            raise UsageError("run folder file", path, f"changed after report.json was written (sha256 {actual[:12]}, recorded {recorded[:12]}); rerun compress run")


SELF_KEY = "report_sha256"


def report_sha256(report: Mapping) -> str:
    """sha256 of the report's content (every key but this digest), in a canonical JSON form that
    reading the file back gives again: a report edited after it was written no longer matches."""
    content = {k: v for k, v in report.items() if k != SELF_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def check_report(report: Mapping, path: Path) -> None:
    """A report compress wrote (it carries its own digest) must be unchanged, and so must the files
    it names; else a UsageError names the report or the file."""
    recorded = report.get(SELF_KEY)
    if recorded is not None and recorded != report_sha256(report):
        raise UsageError("report", path, "was edited after compress wrote it (its report_sha256 no longer matches); rerun compress run")
    if "files" in report:  # hand-made summaries carry no files
        check_files(report["files"], path.parent)
