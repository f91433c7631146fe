"""The one way compress opens an onnxruntime session: CPU, pinned threads, sequential, all graph
optimisations; a file onnxruntime rejects is bad input, named with its path."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from compress.errors import UsageError


def open_session(path: str | Path, threads: int = 1, profile_prefix: str | None = None) -> ort.InferenceSession:
    """`profile_prefix` turns on onnxruntime's per-node profiler (its JSON file starts with it;
    the pruning latency table reads it)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError("ONNX file", path, "not found; check the path")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph/... errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError("ONNX file", path, f"onnxruntime rejects it ({first_line[:200]}); export it again") from exc
