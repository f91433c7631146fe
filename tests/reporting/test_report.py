"""The summary is keyed on what steps produced, not on pass names: the last step that produced
each kind wins, latency figures flow through under the measuring pass's names, and the quality
drop is the final ONNX's when there is one."""

from __future__ import annotations

import pytest

from compress.pipeline import RunRecord, StepRecord
from compress.reporting.report import summarize

STATS = {"params": 100, "macs": 1000, "bytes": 400, "quality": {"accuracy": 0.98}}


def _step(name: str, produced: dict, after: dict | None = None) -> StepRecord:
    return StepRecord(name, {}, STATS, after or STATS, 0.1, {}, {}, produced)


def test_each_kind_comes_from_the_last_step_that_produced_it_whatever_its_name():
    smaller = {**STATS, "params": 50, "quality": {"accuracy": 0.97}}
    record = RunRecord(original=STATS, steps=[
        _step("to_onnx", {"onnx": {"path": "a.onnx", "bytes": 900}, "parity": {"passed": True, "max_abs_diff": 1e-6, "tolerance": 1e-4}}),
        _step("timing", {"latency": {"p50_ms": 2.0, "p90_ms": 3.0, "latency_ratio": 1.0}}),
        _step("requant", {"onnx": {"path": "b.onnx", "bytes": 300}}, after=smaller),
        _step("timing", {"latency": {"p50_ms": 1.0, "p90_ms": 1.5, "latency_ratio": 0.5, "latency_ratio_high": 0.6,
                                     "original_p90_ms": 3.0}}, after=smaller),
    ], onnx_quality={"accuracy": 0.9})
    s = summarize(record, "accuracy")
    assert s["onnx"] == {"path": "b.onnx", "bytes": 300} and s["final"]["onnx_bytes"] == 300
    assert s["parity"]["max_abs_diff"] == 1e-6
    assert s["latency"]["latency_ratio_high"] == 0.6  # a figure the summary does not know by name flows through
    assert (s["final"]["p90_ms"], s["original"]["p90_ms"]) == (1.5, 3.0)
    assert s["produced_by"] == {"onnx": "step 3 (requant)", "parity": "step 1 (to_onnx)", "latency": "step 4 (timing)"}
    assert s["final"]["params"] == 50
    assert s["quality_measured_on"] == "onnx"
    assert s["quality_drop_torch"] == pytest.approx(0.01) and s["quality_drop"] == s["quality_drop_onnx"] == pytest.approx(0.08)


def test_without_an_onnx_the_drop_is_the_torch_models_and_latency_is_absent():
    lower = {**STATS, "quality": {"accuracy": 0.96}}
    s = summarize(RunRecord(original=STATS, steps=[_step("shrink", {}, after=lower)]), "accuracy")
    assert s["quality_measured_on"] == "torch" and s["quality_drop"] == pytest.approx(0.02)
    assert s["quality_drop_onnx"] is None and s["onnx"] is None and s["latency"] is None and s["parity"] is None
    assert s["produced_by"] == {}


def test_without_held_out_data_no_quality_is_measured():
    bare = {k: v for k, v in STATS.items() if k != "quality"}
    s = summarize(RunRecord(original=bare, steps=[_step("x", {}, after=bare)]), "accuracy")
    assert s["quality_drop"] is None and s["quality_measured_on"] is None
