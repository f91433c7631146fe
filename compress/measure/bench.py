"""onnxruntime latency: the one timer, sweeps over batch sizes and thread counts, peak RSS.

Every model is timed on the same machine in the same run: for each (batch, threads) the models
take turns round after round, so a burst of noise lands on all of them rather than on one, and the
spread of the per-round medians shows how far to trust a difference. Timing copies nanoGPT's
`bench.py`: untimed warm-up calls, then timed calls.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from compress.measure.feeds import make_feeds
from compress.measure.settings import BenchSettings
from compress.errors import RunFailed, UsageError
from compress.onnx.session import open_session

BENCH_JSON_VERSION = 1


@dataclass(frozen=True)
class BenchReport:
    """`rows`: one flat dict per (model, batch, threads); `models`: per model path, bytes and RSS."""

    rows: list[dict[str, Any]]
    models: dict[str, dict[str, Any]]
    settings: BenchSettings
    baseline: str | None
    onnxruntime_version: str
    cpu: dict[str, Any]

    def row(self, model: str, batch: int, threads: int) -> dict[str, Any]:
        return next(r for r in self.rows if (r["model"], r["batch"], r["threads"]) == (model, batch, threads))

    def to_json(self) -> dict[str, Any]:
        """Per model its file figures and `results` keyed "b{batch}_t{threads}"."""
        models: dict[str, dict[str, Any]] = {name: {**info, "results": {}} for name, info in self.models.items()}
        for row in self.rows:
            figures = {k: v for k, v in row.items() if k not in ("model", "path")}
            models[row["model"]]["results"][f"b{row['batch']}_t{row['threads']}"] = figures
        return {
            "version": BENCH_JSON_VERSION,
            "onnxruntime": self.onnxruntime_version,
            "cpu": self.cpu,
            "settings": self.settings.model_dump(mode="json"),
            "baseline": self.baseline,
            "models": models,
        }


def time_session(session: ort.InferenceSession, feeds: dict[str, np.ndarray], warmup: int, iters: int) -> list[float]:
    """Milliseconds per `session.run`: `warmup` untimed calls, then `iters` timed ones."""
    for _ in range(warmup):
        session.run(None, feeds)
    times_ms = []
    for _ in range(iters):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        times_ms.append((time.perf_counter_ns() - start) / 1e6)
    return times_ms


def bench(
    paths: Sequence[str | Path],
    settings: BenchSettings,
    log: Callable[[str], None] | None = None,
    baseline: str | Path | None = None,
) -> BenchReport:
    """Time every ONNX file at every (batch, threads); `baseline` (timed too, added if not listed)
    gives each row `ratio` = p50 / baseline p50 and `speedup` = its inverse."""
    say = log or (lambda _: None)
    models, baseline_name = _named_models(paths, baseline)
    samples = _time_in_turns(models, settings, say)
    files = {name: {"path": str(path), "bytes": path.stat().st_size, **_peak_rss(name, path, settings, say)}
             for name, path in models.items()}
    rows = [
        {"model": name, "path": str(path), "batch": batch, "threads": threads,
         **latency_stats(samples[(name, batch, threads)], batch), "bytes": files[name]["bytes"]}
        for batch in settings.batch_sizes
        for threads in settings.threads
        for name, path in models.items()
    ]  # fmt: skip
    if baseline_name is not None:
        _add_ratios(rows, baseline_name)
    return BenchReport(rows, files, settings, baseline_name, ort.__version__, cpu_info())


def _time_in_turns(
    models: dict[str, Path], settings: BenchSettings, say: Callable[[str], None]
) -> dict[tuple[str, int, int], list[list[float]]]:
    """Per (model, batch, threads), each round's times. One session per model and thread count;
    within a round every model runs its warm-up and timed calls in turn."""
    samples: dict[tuple[str, int, int], list[list[float]]] = {}
    for threads in settings.threads:
        sessions = {name: open_session(path, threads) for name, path in models.items()}
        for batch in settings.batch_sizes:
            feeds = {name: _checked_feeds(sessions[name], path, batch, settings) for name, path in models.items()}
            say(f"bench: batch {batch}, {threads} thread(s): {settings.rounds} round(s) of "
                f"{settings.warmup} warm-up + {settings.iters} timed calls per model")
            for round_index in range(settings.rounds):
                for name in models:
                    times_ms = time_session(sessions[name], feeds[name], settings.warmup, settings.iters)
                    samples.setdefault((name, batch, threads), []).append(times_ms)
                    say(f"bench:   round {round_index + 1}/{settings.rounds} {name}: median {np.median(times_ms):.3f} ms")
    return samples


def latency_stats(rounds_ms: list[list[float]], batch: int) -> dict[str, float]:
    """Percentiles and mean over every round's samples; spread = range of round medians / p50."""
    every_ms = np.concatenate(rounds_ms)
    p50, p90, p99 = (float(p) for p in np.percentile(every_ms, [50, 90, 99]))
    mean_ms = float(every_ms.mean())
    round_medians = [float(np.median(r)) for r in rounds_ms]
    return {
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean_ms,
        "throughput": batch * 1000.0 / mean_ms,
        "spread_pct": 100.0 * (max(round_medians) - min(round_medians)) / p50,
    }


def _add_ratios(rows: list[dict[str, Any]], baseline_name: str) -> None:
    reference = {(r["batch"], r["threads"]): r["p50_ms"] for r in rows if r["model"] == baseline_name}
    for row in rows:
        base_ms = reference[(row["batch"], row["threads"])]
        row["ratio"] = row["p50_ms"] / base_ms
        row["speedup"] = base_ms / row["p50_ms"]


def _named_models(paths: Sequence[str | Path], baseline: str | Path | None) -> tuple[dict[str, Path], str | None]:
    """Models by display name (file stem, or the path where stems clash), baseline first if added."""
    given = [Path(p) for p in paths]
    seen: set[Path] = set()
    for path in given:
        if path.resolve() in seen:
            raise UsageError("ONNX file", path, "is listed twice; list each model once")
        seen.add(path.resolve())
    if baseline is not None and Path(baseline).resolve() not in seen:
        given.insert(0, Path(baseline))
    if not given:
        raise UsageError("ONNX files", "none", "give at least one .onnx model to time")
    stems = [p.stem for p in given]
    names = stems if len(set(stems)) == len(stems) else [str(p) for p in given]
    models = dict(zip(names, given))
    baseline_name = None
    if baseline is not None:
        baseline_name = next(name for name, path in models.items() if path.resolve() == Path(baseline).resolve())
    return models, baseline_name


def _checked_feeds(session: ort.InferenceSession, path: Path, batch: int, settings: BenchSettings) -> dict[str, np.ndarray]:
    """Feeds for `session`, run once here so a model that cannot run fails as bad input, not mid-timing."""
    feeds = make_feeds(session, path, batch, settings.seq_len, settings.seed)
    try:
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidArgument/... errors
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        shapes = {name: list(value.shape) for name, value in feeds.items()}
        fix = f"onnxruntime cannot run it on inputs {shapes} ({first_line[:200]}); check its input axes"
        raise UsageError("ONNX file", path, fix) from exc
    return feeds


# The RSS child imports only this module (no torch: `compress/__init__` imports lazily) and never
# sees the caller's __main__, so its peak is what loading and running the model costs.
_RSS_CHILD = """
import json, sys
from compress.measure.bench import child_peak_rss
print(json.dumps(child_peak_rss(**json.loads(sys.argv[1]))))
"""


def _peak_rss(name: str, path: Path, settings: BenchSettings, say: Callable[[str], None]) -> dict[str, float]:
    """Peak RSS of a fresh process that loads `path` and runs it at the largest batch and thread count."""
    args = {"path": str(path), "batch": max(settings.batch_sizes), "threads": max(settings.threads),
            "seq_len": settings.seq_len, "seed": settings.seed}
    command = [sys.executable, "-c", _RSS_CHILD, json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunFailed(f"peak RSS of {path}: the measuring process exited {done.returncode}: {last_line}")
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"bench: {name}: peak RSS {rss['rss_mb']:.1f} MB ({rss['rss_base_mb']:.1f} MB before loading it)")
    return rss


def child_peak_rss(path: str, batch: int, threads: int, seq_len: int, seed: int, calls: int = 3) -> dict[str, float]:
    """Runs in the RSS child: peak RSS (MB) before loading the model and after a few calls."""
    base_mb = _max_rss_mb()
    session = open_session(path, threads)
    feeds = make_feeds(session, Path(path), batch, seq_len, seed)
    for _ in range(calls):
        session.run(None, feeds)
    return {"rss_mb": _max_rss_mb(), "rss_base_mb": base_mb}


def _max_rss_mb() -> float:
    """Peak RSS of this address space. Not ru_maxrss: Linux carries the parent's peak into a
    child across fork and exec, so a child of a process holding torch would start at ~300 MB."""
    status = Path("/proc/self/status")
    if status.is_file():
        kib = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(kib) * 1024 / 1e6
    import resource  # macOS, where ru_maxrss is in bytes; POSIX only, hence imported here

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def cpu_info() -> dict[str, Any]:
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable}
