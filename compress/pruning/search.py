"""Budgets instead of a ratio: the smallest pruning ratio whose model meets a MACs, parameter or
onnxruntime latency budget, found by bisection on the ratio (every figure falls as the ratio
grows), each probe measured on the really pruned model.

Latency is measured as the bench measures it: the model exported by the one export, timed by the
bench's paired timing against the original (`compress.measure.bench.time_paired`) at the pass's
batch and thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import UsageError
from compress.model import Model

# The largest ratio tried: every group keeps at least a twentieth of its width.
MAX_RATIO = 0.95
BISECTION_STEPS = 7


@dataclass(frozen=True)
class Probe:
    ratio: float
    value: float


def find_ratio(measure: Callable[[float], float], dense: float, target: float, option: str, unit: str) -> tuple[float, list[Probe]]:
    """The smallest probed ratio whose figure is <= target, and every probe. An already met or an
    unreachable budget is bad input: the message gives the measured figure."""
    if dense <= target:
        raise UsageError(option, f"{target:g}", f"already met: the model has {dense:.4g} {unit}, nothing to prune; ask for less or drop the option")
    probes = [Probe(MAX_RATIO, measure(MAX_RATIO))]
    if probes[0].value > target:
        raise UsageError(option, f"{target:g}", f"unreachable: the best reached is {probes[0].value:.4g} {unit} at ratio {MAX_RATIO} "
                         f"(from {dense:.4g}); ask for at least {probes[0].value:.4g}")
    low, high = 0.0, MAX_RATIO
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        probe = Probe(middle, measure(middle))
        probes.append(probe)
        if probe.value <= target:
            high = middle
        else:
            low = middle
    return high, probes


class LatencyProbe:
    """onnxruntime latency of pruned candidates on a busy machine whose load moves every latency:
    each candidate is timed by the bench's paired timing (ABBA blocks with the original), and its
    figure is its latency ratio to the original times the original's median in that same timing,
    so a candidate is judged against the budget under the load of its own moment, not the load of
    the search's start."""

    def __init__(self, original: Model, folder: Path, batch: int, threads: int, max_seconds: float = 5.0) -> None:
        from compress.measure.bench import time_session
        from compress.measure.settings import BenchSettings

        self.folder = folder
        self.settings = BenchSettings(batch_sizes=(batch,), threads=(threads,), max_seconds=max_seconds)
        self.original = self._session(original, "original.onnx")
        session, feeds = self.original
        self.original_ms = float(np.median(time_session(session, feeds, self.settings.warmup, self.settings.min_calls)))

    def __call__(self, model: Model) -> float:
        from compress.measure.bench import block_ratios, time_paired

        candidate = self._session(model, "probe.onnx")
        sessions = {"original": self.original[0], "probe": candidate[0]}
        feeds = {"original": self.original[1], "probe": candidate[1]}
        calls = time_paired(sessions, feeds, self.settings, "original")[0]
        return block_ratios(calls, "original")["probe"][0] * float(np.median(calls["original"].times_ms))

    def _session(self, model: Model, filename: str):
        from compress.measure.feeds import make_feeds
        from compress.onnx.export import export_onnx
        from compress.onnx.session import open_session

        path = export_onnx(model, self.folder / filename).path
        session = open_session(path, self.settings.threads[0])
        return session, make_feeds(session, path, self.settings.batch_sizes[0], model.source.seq_len, seed=0)
