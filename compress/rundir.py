"""The run folder as one unit: a run writes into a fresh staging folder beside `--out`, under a
lock, and the staging folder replaces `--out` whole at the end. So a folder never holds files
from two runs: a failed, interrupted or killed run leaves the previous complete result (or
nothing), and two runs into one folder at once cannot mix their files.

Beside `runs/x` live only hidden names of this tool: `.x.lock` (the holder's pid; an advisory
`flock`, which the kernel drops when the holder dies, so a killed run's lock is taken over),
`.x.staging.*` (a run in progress), `.x.old.*` (the previous result during the swap) and
`.x.checkpoints` (the fit checkpoints of a run that has not completed, for `--resume`: see
compress/resume.py). A staging or old folder found while holding the lock belongs to a run that
was killed: removed. The checkpoints stay until a run completes: they are what a killed run is
resumed from, and the staging folder, swapped in only at the end, cannot hold them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from compress.atomic import ensure_writable_dir, umask
from compress.errors import UsageError

# The file that marks a folder as a compress run folder, which a new run may replace whole.
REPORT_FILE = "report.json"


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def run_folder(out: str | os.PathLike, log: Callable[[str], None] = _quiet) -> Iterator[Path]:
    """Lock `out`, yield a fresh staging folder beside it, and on success swap it in for `out`;
    on any exception (KeyboardInterrupt and SIGTERM included) remove it and leave `out` as it was."""
    out = check_out(out)
    with lock(out, log):
        clean_stale(out, log)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging.", dir=out.parent))
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes 0700; the run folder gets the usual mode
        try:
            yield staging
            _swap(staging, out)
            shutil.rmtree(checkpoint_folder(out), ignore_errors=True)  # a complete run resumes nothing
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def checkpoint_folder(out: Path) -> Path:
    """`.NAME.checkpoints` beside `out`: a run's fit checkpoints, written under the lock, kept
    after Ctrl-C, SIGTERM, a kill or a failed step, removed when a run into `out` completes."""
    return out.with_name(f".{out.name}.checkpoints")


def check_out(out: str | os.PathLike) -> Path:
    """`out` resolved, once its parent is known writable and `out` replaceable: the CLI asks before
    loading the model, so a wrong --out fails fast. `out` itself is not created: a run that fails
    into a new folder leaves nothing."""
    out = Path(out).resolve()
    ensure_writable_dir(out.parent)
    try:
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        raise UsageError("output folder", out, f"cannot write beside it in {out.parent} ({exc.strerror}); choose a writable --out") from exc
    check_replaceable(out)
    return out


def check_replaceable(out: Path) -> None:
    """The swap deletes what `out` held: only an empty folder or an earlier run's may go."""
    if out.exists() and not out.is_dir():
        raise UsageError("output folder", out, "is a file; choose a folder for --out")
    if Path.cwd().resolve().is_relative_to(out):
        raise UsageError("output folder", out, "is the current folder or holds it, and a run replaces its folder whole; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise UsageError("output folder", out, f"holds files but no {REPORT_FILE}, so it is not a compress run folder that a run may replace; choose a new or empty --out")


@contextlib.contextmanager
def lock(out: Path, log: Callable[[str], None] = _quiet) -> Iterator[None]:
    """Hold `.NAME.lock` beside `out` for the block; a live holder -> UsageError naming its pid."""
    path = out.with_name(f".{out.name}.lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        except OSError as exc:
            raise UsageError("output folder", out, f"cannot lock it: {path.name} cannot be created beside it ({exc.strerror}); choose an --out in a writable folder") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise UsageError("output folder", out, f"is in use by another compress run (pid {holder or 'unknown'}); wait for it to finish or choose another --out") from None
        # The holder unlinks the file on release: a lock on an unlinked file guards nothing, retry.
        if _same_file(fd, path):
            break
        os.close(fd)
    stale = _read_pid(fd)
    if stale is not None:
        log(f"took over the lock on {out} from pid {stale}, which ended without releasing it")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        os.unlink(path)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def clean_stale(out: Path, log: Callable[[str], None] = _quiet) -> None:
    """Remove what killed runs left: staging and old folders beside `out`, temp files inside it.
    Called with the lock held, so nothing found here belongs to a live run."""
    stale = [*out.parent.glob(f".{out.name}.staging.*"), *out.parent.glob(f".{out.name}.old.*")]
    for folder in (out, checkpoint_folder(out)):
        if folder.is_dir():
            stale += [p for p in folder.rglob(".*.tmp") if p.is_file()]  # atomic_path's temp files
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} leftover(s) of an earlier run that was killed: {', '.join(p.name for p in stale[:3])}")


def _swap(staging: Path, out: Path) -> None:
    """Put `staging` in place of `out`. Signals wait until both renames are done, so Ctrl-C or
    SIGTERM cannot leave `out` missing with the old result parked aside."""
    old = out.with_name(f".{out.name}.old.{os.getpid()}")
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    shutil.rmtree(old, ignore_errors=True)


def relative_paths(value: Any, folder: Path) -> Any:
    """`value` (JSON-like) with every path inside `folder` written relative to it: what a run
    records must not name its staging folder, which is gone once swapped in, and a relative record
    stays true when the folder moves."""
    if isinstance(value, dict):
        return {k: relative_paths(v, folder) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v, folder) for v in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).is_relative_to(folder):
        return str(Path(value).relative_to(folder))
    return value
