"""The one torch thread setting, applied once at start.

torch's default (one thread per core) runs 2-9x slower on a shared 2-core machine, where other
processes hold the cores (benchmarks/README.md, "torch threads"). The default is 1 thread on CPU,
or what the launcher assigned: `torchrun` sets OMP_NUM_THREADS for each worker.
"""

from __future__ import annotations

import os
import sys

THREADS_ENV = "OMP_NUM_THREADS"


def default_torch_threads() -> int:
    """OMP_NUM_THREADS when a launcher set it to a positive count, else 1."""
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def apply_torch_threads(threads: int) -> None:
    """Use `threads` intra-op threads in torch. Set through the environment when torch is not
    imported yet (torch reads OMP_NUM_THREADS when it loads), so a command that never needs torch
    never pays for importing it; set directly when it is."""
    os.environ[THREADS_ENV] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)
