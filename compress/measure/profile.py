"""Where an ONNX graph spends its time: onnxruntime's per-node profiler, summed by operator type.

INT8 is not always faster; comparing the float and the quantized graph operator by operator shows
which kernels gained and which (quantize/dequantize, requantization, float operators left
between them) cost time.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from compress.measure.bench import time_session
from compress.measure.feeds import make_feeds
from compress.onnx.session import open_session


def op_type_ms(path: str | Path, batch: int = 1, threads: int = 1, seq_len: int = 128, calls: int = 20, warmup: int = 3) -> dict[str, float]:
    """Milliseconds per call spent in each operator type (after onnxruntime's fusions), largest
    first: the sum over its nodes of each node's median time, the first `warmup` runs left out."""
    with tempfile.TemporaryDirectory(prefix="compress-profile-") as tmp:
        session = open_session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        feeds = make_feeds(session, Path(path), batch, seq_len, seed=0)
        time_session(session, feeds, warmup, calls)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            runs[event["name"]].append((event["args"].get("op_name", "?"), event["dur"] / 1000))
    # Each node's median over the timed runs (a busy machine's spikes drop out), summed by type.
    totals: dict[str, float] = defaultdict(float)
    for node_runs in runs.values():
        timed = node_runs[warmup:] or node_runs
        totals[timed[0][0]] += float(np.median([ms for _, ms in timed]))
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
