"""Every file the tool writes goes to a temp file in the same folder and is renamed into place,
so an interrupted run never leaves a half-written ONNX file or report.

A temp file's name carries the writer's pid (`.model.onnx.<pid>.<random>.tmp`): one left by a
process that was killed (SIGKILL, power loss) is removed the next time that file is written."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compress.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    ensure_writable_dir(target.parent)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(target: Path) -> None:
    """Remove temp files for `target` whose writer is no longer running; a live writer's (another
    compress writing the same file) stay."""
    prefix = f".{target.name}."
    for path in target.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = path.name[len(prefix):].split(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check we can write there; a UsageError names it otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError("output folder", folder, f"cannot create it ({exc.strerror}); choose a writable --out") from exc
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError("output folder", folder, "is not a writable folder; choose a writable --out")
    return folder
