"""Give the heap memory a phase freed back to the operating system before the next phase starts.

glibc keeps freed blocks for reuse: after a forward pass over the held-out set or an export it
holds on to their pages (170 MB after MiniLM's reference outputs), so each later phase's peak
stacks on the last one's leftovers. `malloc_trim` returns every whole free page; elsewhere (macOS,
musl) there is nothing to call and the garbage collection alone runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed() -> None:
    """Collect unreachable Python objects, then hand the heap's free pages back."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
