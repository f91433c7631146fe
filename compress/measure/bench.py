"""onnxruntime latency: the one timer. Models are compared paired, call by call, with a confidence
interval; sweeps over batch sizes and thread counts; the machine's state while timing; peak RSS.

At each (batch, threads) the models' calls alternate one by one, the order reversing every cycle
(A B, B A, A B, ...: ABBA blocks), so a burst of machine noise lands on neighbouring calls of
every model rather than on one. Each ABBA block gives one log-ratio per model against the
baseline, the mean of its two pairs' log-ratios, which cancels what going first or second in a
pair does. The latency ratio is exp(median of the block log-ratios), with the distribution-free
95% interval of that median from order statistics (the sign-test interval; Hollander & Wolfe,
"Nonparametric Statistical Methods", ch. 3). Timing stops once every interval is within
+/- `target_pct`, or at `max_seconds`, and says which. A model timed without a baseline stops on
the interval of its own median latency. p50/p90/p99 come from every timed call.

While timing, each model's calls record process CPU time against wall time: a session of N
threads that got much less than N CPUs was sharing the machine, and its figures are flagged.
"""

from __future__ import annotations

import json
import math
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

from compress.errors import RunFailed, UsageError
from compress.measure.feeds import input_shape, make_feeds
from compress.measure.settings import BenchSettings
from compress.onnx.session import open_session

__all__ = ["BenchReport", "BenchSettings", "bench", "median_interval", "paired_interval", "time_session"]

BENCH_JSON_VERSION = 2
CONFIDENCE = 0.95
# Consecutive groups whose medians give the interval (see paired_interval).
GROUPS = 20
# A session that got less than this share of its threads' CPU time was sharing the machine.
CPU_SHARE_WARNING = 0.9
# Part of the available memory a batch may be estimated to need.
MEMORY_SHARE = 0.8


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


@dataclass
class _Calls:
    """One model's timed calls at one (batch, threads): wall milliseconds, and the process CPU
    time and wall time summed over them."""

    times_ms: list[float]
    cpu_ns: int = 0
    wall_ns: int = 0


def bench(
    paths: Sequence[str | Path],
    settings: BenchSettings,
    log: Callable[[str], None] | None = None,
    baseline: str | Path | None = None,
) -> BenchReport:
    """Time every ONNX file at every (batch, threads), paired call by call. With a `baseline`
    (timed too, added if not listed) each row gets `latency_ratio` (with its 95% interval
    `latency_ratio_low` / `latency_ratio_high`) and `speedup` = 1 / latency_ratio."""
    say = log or (lambda _: None)
    models, baseline_name = _named_models(paths, baseline)
    cpu = cpu_info()
    _check_threads(settings, cpu["usable_cpus"])
    for path in models.values():
        _check_runs(path, settings)
    # Peak RSS next: its fresh process also estimates the memory the largest batch needs, so a
    # batch that cannot fit is refused before any timing.
    files = {name: {"path": str(path), "bytes": path.stat().st_size, **_peak_rss(name, path, settings, say)}
             for name, path in models.items()}
    rows = []
    for threads in settings.threads:
        sessions = {name: open_session(path, threads) for name, path in models.items()}
        for batch in settings.batch_sizes:
            feeds = {name: _checked_feeds(sessions[name], path, batch, settings) for name, path in models.items()}
            rows += _time_setting(sessions, feeds, batch, threads, settings, baseline_name, say)
        del sessions, feeds  # before the next thread count's sessions load
    for row in rows:
        row["bytes"] = files[row["model"]]["bytes"]
        row["path"] = str(models[row["model"]])
    return BenchReport(rows, files, settings, baseline_name, ort.__version__, cpu)


def _check_runs(path: Path, settings: BenchSettings) -> None:
    """A file that is not a runnable model is bad input, named before anything is timed; a fixed
    batch axis refuses the other batch sizes here, without allocating them. The session is
    dropped on return, so it holds no memory while the models are timed."""
    session = open_session(path, 1)
    _checked_feeds(session, path, 1, settings)
    for batch in settings.batch_sizes:
        for spec in session.get_inputs():
            input_shape(spec, path, batch, settings.seq_len)


def _time_setting(sessions: dict[str, ort.InferenceSession], feeds: dict[str, dict[str, np.ndarray]], batch: int,
                  threads: int, settings: BenchSettings, baseline: str | None, say: Callable[[str], None]) -> list[dict[str, Any]]:
    say(f"bench: batch {batch}, {threads} thread(s): {settings.warmup} warm-up call(s) per model, then paired calls "
        f"until the 95% interval is within +/-{settings.target_pct:g}% or {settings.max_seconds:g} s")
    calls, stopped, seconds, confidence = time_paired(sessions, feeds, settings, baseline)
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ratios = block_ratios(calls, baseline, confidence) if baseline is not None else {}
    rows = []
    for name, timed in calls.items():
        share = timed.cpu_ns / timed.wall_ns / threads if timed.wall_ns else 0.0
        row = {"model": name, "batch": batch, "threads": threads, **latency_stats(timed.times_ms, batch, confidence),
               "calls": len(timed.times_ms), "seconds": round(seconds, 3), "stopped": stopped, "confidence": confidence,
               "cpu_share": share, "cpu_starved": share < CPU_SHARE_WARNING, "load_1m": load_1m}
        if baseline is not None:
            ratio, low, high = (1.0, 1.0, 1.0) if name == baseline else ratios[name]
            row.update(latency_ratio=ratio, latency_ratio_low=low, latency_ratio_high=high, speedup=1.0 / ratio)
        rows.append(row)
        say(f"bench:   {name}: p50 {row['p50_ms']:.3f} ms over {row['calls']} calls"
            + (f", ratio {row['latency_ratio']:.3f} [{row['latency_ratio_low']:.3f}, {row['latency_ratio_high']:.3f}]" if baseline else ""))
        if row["cpu_starved"]:
            say(f"bench: warning: {name} got {share:.2f} of its {threads} thread(s) of CPU while timed at batch {batch} "
                f"(load average {load_1m:.2f}): the machine is busy, so its latency figures are noisy")
    say(f"bench:   stopped: {stopped} after {seconds:.1f} s")
    return rows


def time_paired(sessions: dict[str, ort.InferenceSession], feeds: dict[str, dict[str, np.ndarray]],
                settings: BenchSettings, baseline: str | None) -> tuple[dict[str, _Calls], str, float, float]:
    """Warm up each session, then time ABBA blocks: one call per model in a random order (seeded),
    then one call per model in the reverse order; until every interval is within the target
    ("converged") or the time cap ("time cap"). The random order keeps the bookkeeping between
    blocks, and any rhythm of the machine, from always falling before the same model.

    The intervals are looked at after min_calls, then each time the calls double; the k-th look
    uses confidence 1 - 0.05 * 6 / (pi k)^2 (`look_confidence`), so over all looks the chance
    that the interval timing stops on misses the truth stays under 5% (alpha spending:
    stopping at the first narrow interval would otherwise favour lucky ones).
    Returns each model's calls, why timing stopped, the seconds it took and the confidence of
    the look it stopped on."""
    names = list(sessions)
    for name in names:
        for _ in range(settings.warmup):
            sessions[name].run(None, feeds[name])
    calls = {name: _Calls([]) for name in names}
    rng = np.random.default_rng(settings.seed)
    target = math.log1p(settings.target_pct / 100)
    check_at, look = settings.min_calls // 2, 1
    blocks = 0
    started = time.perf_counter()
    while True:
        order = [names[i] for i in rng.permutation(len(names))]
        for name in order + order[::-1]:
            _timed_call(sessions[name], feeds[name], calls[name])
        blocks += 1
        if blocks >= check_at:
            if _half_widths(calls, baseline, look_confidence(look)) <= target:
                return calls, "converged", time.perf_counter() - started, look_confidence(look)
            check_at, look = 2 * blocks, look + 1
        if blocks >= settings.min_calls // 2 and time.perf_counter() - started >= settings.max_seconds:
            return calls, "time cap", time.perf_counter() - started, look_confidence(look)


def look_confidence(look: int, confidence: float = CONFIDENCE) -> float:
    """The confidence of the `look`-th look at an interval: the misses allowed, 1 - confidence,
    spent as (1 - confidence) * 6 / (pi look)^2, which sums to 1 - confidence over all looks."""
    return 1.0 - (1.0 - confidence) * 6.0 / (math.pi * look) ** 2


def time_session(session: ort.InferenceSession, feeds: dict[str, np.ndarray], warmup: int, calls: int) -> list[float]:
    """Milliseconds per call of one session timed alone (a pruning budget's latency probe): `warmup`
    untimed calls, then `calls` timed ones with the same per-call timer as the paired bench."""
    for _ in range(warmup):
        session.run(None, feeds)
    timed = _Calls([])
    for _ in range(calls):
        _timed_call(session, feeds, timed)
    return timed.times_ms


def _timed_call(session: ort.InferenceSession, feeds: dict[str, np.ndarray], into: _Calls) -> None:
    cpu_start = time.process_time_ns()
    start = time.perf_counter_ns()
    session.run(None, feeds)
    wall = time.perf_counter_ns() - start
    into.cpu_ns += time.process_time_ns() - cpu_start
    into.wall_ns += wall
    into.times_ms.append(wall / 1e6)


def block_ratios(calls: dict[str, _Calls], baseline: str, confidence: float = CONFIDENCE) -> dict[str, tuple[float, float, float]]:
    """Per model other than `baseline`: (ratio, low, high) of its latency to the baseline's."""
    return {name: tuple(math.exp(v) for v in paired_interval(_block_log_ratios(timed.times_ms, calls[baseline].times_ms), confidence))
            for name, timed in calls.items() if name != baseline}  # type: ignore[misc]


def _block_log_ratios(model_ms: list[float], baseline_ms: list[float]) -> np.ndarray:
    """One log-ratio per ABBA block (each model's two calls of a block are consecutive in its
    list): the mean of the block's two paired log-ratios, which cancels going first or second."""
    n = min(len(model_ms), len(baseline_ms)) // 2 * 2
    paired = np.log(np.asarray(model_ms[:n])) - np.log(np.asarray(baseline_ms[:n]))
    return paired.reshape(-1, 2).mean(axis=1)


def _half_widths(calls: dict[str, _Calls], baseline: str | None, confidence: float) -> float:
    """The widest half-width, in log units, of the intervals timing waits on."""
    if baseline is not None and len(calls) > 1:
        samples = [_block_log_ratios(timed.times_ms, calls[baseline].times_ms) for name, timed in calls.items() if name != baseline]
    else:
        samples = [np.log(np.asarray(timed.times_ms)) for timed in calls.values()]
    widths = []
    for values in samples:
        median, low, high = paired_interval(values, confidence)
        widths.append(max(median - low, high - median))
    return max(widths)


def paired_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, low, high) of a time series of values (block log-ratios, or log latencies).

    The median of all values, with a 95% interval that survives noise that comes in spells (a
    busy minute slows a run of neighbouring calls, so neighbours are not independent): the
    values are cut into GROUPS consecutive groups and the interval is the sign-test interval of
    the group medians (the batch-means method of simulation output analysis), widened to hold
    the overall median. With fewer than 2 x GROUPS values each value is its own group."""
    n = len(values)
    size = max(1, n // GROUPS)
    count = n // size
    groups = np.median(np.asarray(values[: count * size], dtype=float).reshape(count, size), axis=1)
    median = float(np.median(values))
    _, low, high = median_interval(groups, confidence)
    return median, min(low, median), max(high, median)


def median_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, low, high): the sample median and the distribution-free interval that holds the
    population median with at least `confidence`, between two order statistics: [x_(k+1), x_(n-k)]
    with the largest k such that 2 P(Binomial(n, 1/2) <= k) <= 1 - confidence. Needs n >= 6 at
    95%; more for a higher confidence (10 values hold 99.8%)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    k = _order_rank(n, 1.0 - confidence)
    if k is None:
        raise ValueError(f"{n} values are too few for a {confidence:.1%} interval of the median")
    return float(np.median(ordered)), float(ordered[k]), float(ordered[n - 1 - k])


def _order_rank(n: int, alpha: float) -> int | None:
    log_half = n * math.log(0.5)
    log_n = math.lgamma(n + 1)
    cdf, rank = 0.0, None
    for k in range(n // 2 + 1):
        cdf += math.exp(log_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half)
        if 2 * cdf > alpha:
            return rank
        rank = k
    return rank


def latency_stats(times_ms: Sequence[float], batch: int, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Percentiles and mean of the timed calls, and the interval of the median (p50)."""
    every_ms = np.asarray(times_ms, dtype=float)
    p50, p90, p99 = (float(p) for p in np.percentile(every_ms, [50, 90, 99]))
    mean_ms = float(every_ms.mean())
    _, low, high = (math.exp(v) for v in paired_interval(np.log(every_ms), confidence))
    return {"p50_ms": p50, "p50_low_ms": low, "p50_high_ms": high, "p90_ms": p90, "p99_ms": p99,
            "mean_ms": mean_ms, "throughput": batch * 1000.0 / mean_ms}


def _check_threads(settings: BenchSettings, usable_cpus: int) -> None:
    too_many = [t for t in settings.threads if t > usable_cpus]
    if too_many:
        raise UsageError("bench threads", too_many[0], f"this machine has {usable_cpus} usable CPU(s); use 1 to {usable_cpus}")


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
    for path in given:
        if not path.is_file():
            raise UsageError("ONNX file", path, "not found; check the path")
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
    """Peak RSS of a fresh process that loads `path` and runs it at the largest batch and thread
    count, once a batch-1 call has shown that batch fits in the available memory."""
    import psutil

    batch = max(settings.batch_sizes)
    args = {"path": str(path), "batch": batch, "threads": max(settings.threads), "seq_len": settings.seq_len,
            "seed": settings.seed, "available_mb": psutil.virtual_memory().available * MEMORY_SHARE / 1e6}
    command = [sys.executable, "-c", _RSS_CHILD, json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunFailed(f"peak RSS of {path}: the measuring process exited {done.returncode}: {last_line}")
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    if "needs_mb" in rss:
        fits = max(1, int(batch * rss["available_mb"] / rss["needs_mb"]))
        raise UsageError("batch size", batch, f"{path.name} needs about {rss['needs_mb'] / 1e3:.1f} GB at that batch "
                         f"({rss['per_item_mb']:.1f} MB per item, from a batch-1 call) and {rss['available_mb'] / 1e3:.1f} GB "
                         f"is available; use a batch of at most {fits}")
    say(f"bench: {name}: peak RSS {rss['rss_mb']:.1f} MB ({rss['rss_base_mb']:.1f} MB before loading it)")
    return rss


def child_peak_rss(path: str, batch: int, threads: int, seq_len: int, seed: int, available_mb: float, calls: int = 3) -> dict[str, float]:
    """Runs in the RSS child: peak RSS (MB) before loading the model and after a few calls at
    `batch`; first a batch-1 call, whose peak growth per item estimates what `batch` needs, so a
    batch that would not fit in `available_mb` is reported instead of run."""
    base_mb = _max_rss_mb()
    session = open_session(path, threads)
    loaded_mb = _max_rss_mb()
    one = make_feeds(session, Path(path), 1, seq_len, seed)
    session.run(None, one)
    per_item_mb = max(_max_rss_mb() - loaded_mb, sum(v.nbytes for v in one.values()) / 1e6)
    needs_mb = loaded_mb + batch * per_item_mb
    if batch > 1 and needs_mb > available_mb:
        return {"needs_mb": needs_mb, "per_item_mb": per_item_mb, "available_mb": available_mb}
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
    return {"model": model, "machine": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable or 1}
