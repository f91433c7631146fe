"""compress.gate: budgets against a report's summary, fail-closed, overrides, JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import UsageError
from compress.reporting.gate import Budgets, Violation, budgets_from, check, junit_xml, parse_budgets, read_report


def _report(gates: dict | None = None, p90_ms: object = 0.21, **final_overrides: object) -> dict:
    """A report as a digits-CNN run (prune -> qat -> export -> bench) writes it."""
    original = {"params": 23_466, "macs": 1_530_000, "bytes": 93_864, "onnx_bytes": 96_212,
                "p50_ms": 0.41, "p90_ms": 0.48, "quality": {"accuracy": 0.9811}}
    final = {"params": 6_134, "macs": 402_000, "bytes": 24_536, "onnx_bytes": 27_481,
             "p50_ms": 0.18, "p90_ms": p90_ms, "quality": {"accuracy": 0.9755}, **final_overrides}
    return {
        "schema_version": 2,
        "versions": {"compress": "0.1.0", "torch": "2.13.0", "onnx": "1.17.0", "onnxruntime": "1.20.1"},
        "recipe": {"version": 1, "steps": [{"prune": {"ratio": 0.5}}, {"export": {}}, {"bench": {}}],
                   "gates": gates or {}},
        "summary": {
            "original": original,
            "final": final,
            "quality_metric": "accuracy",
            "quality_measured_on": "onnx",
            "quality_drop": 0.0056,
            "latency": {"batch": 1, "threads": 1, "p50_ms": 0.18, "p90_ms": p90_ms, "latency_ratio": 0.4375,
                        "latency_ratio_low": 0.4301, "latency_ratio_high": 0.4452},
            "parity": {"passed": True, "max_abs_diff": 2.4e-06, "tolerance": 1e-04},
        },
    }


EVERY_BUDGET = dict(max_onnx_mb=0.03, max_params=6_500, max_p90_ms=0.25, max_latency_ratio=0.5,
                    max_quality_drop=0.01, require_parity=True)


def test_a_model_within_every_budget_has_no_violations():
    assert check(_report(), Budgets(**EVERY_BUDGET)) == []


@pytest.mark.parametrize(
    ("budget", "limit", "message"),
    [
        ("max_onnx_mb", 0.02, "max_onnx_mb: final ONNX is 0.03 MB, budget 0.02 MB"),
        ("max_params", 5_000, "max_params: final model has 6,134 params, budget 5,000"),
        ("max_p90_ms", 0.2, "max_p90_ms: final p90 is 0.21 ms, budget 0.20 ms"),
        ("max_latency_ratio", 0.4, "max_latency_ratio: final latency is up to 0.45x the original's (95% interval's upper end), budget 0.40x"),
        ("max_quality_drop", 0.005, "max_quality_drop: accuracy of the final ONNX dropped by 0.0056, budget 0.0050"),
    ],
)
def test_each_budget_fails_alone_with_the_measured_figure(budget, limit, message):
    budgets = Budgets(**{**EVERY_BUDGET, budget: limit})
    violations = check(_report(), budgets)
    assert [v.budget for v in violations] == [budget]
    assert violations[0].message == message
    assert violations[0].limit == limit


def test_measured_figures_are_in_budget_units():
    budgets = Budgets(max_onnx_mb=0.02, max_params=5_000)
    by_name = {v.budget: v.measured for v in check(_report(), budgets)}
    assert by_name == {"max_onnx_mb": 0.027481, "max_params": 6_134}
    assert isinstance(by_name["max_params"], int)


def test_onnx_megabytes_are_decimal():
    # 1.1e6 bytes is 1.10 MB (1 MB = 1e6 bytes), not 1.05 MiB.
    (violation,) = check(_report(onnx_bytes=1_100_000), Budgets(max_onnx_mb=0.5))
    assert violation == Violation("max_onnx_mb", 1.1, 0.5, "max_onnx_mb: final ONNX is 1.10 MB, budget 0.50 MB")


def test_a_near_miss_prints_enough_digits_to_tell_the_figures_apart():
    (violation,) = check(_report(onnx_bytes=500_400), Budgets(max_onnx_mb=0.5))
    assert violation.message == "max_onnx_mb: final ONNX is 0.5004 MB, budget 0.5000 MB"


def test_a_failed_parity_check_is_a_violation_with_its_difference():
    report = _report()
    report["summary"]["parity"] = {"passed": False, "max_abs_diff": 3.2e-03, "tolerance": 1e-04}
    (violation,) = check(report, Budgets(require_parity=True))
    assert (violation.measured, violation.limit) == (3.2e-03, 1e-04)
    assert violation.message == "require_parity: ONNX parity failed, max abs diff 3.2e-03, tolerance 1.0e-04"
    assert check(report, Budgets(require_parity=False)) == []


@pytest.mark.parametrize(
    ("budget", "limit", "unmeasure", "fix"),
    [
        ("max_onnx_mb", 1.0, lambda s: s["final"].update(onnx_bytes=None), "add the export step"),
        ("require_parity", True, lambda s: s.update(parity=None), "add the export step"),
        ("max_p90_ms", 5.0, lambda s: s["latency"].pop("p90_ms"), "add the bench step"),
        ("max_p90_ms", 5.0, lambda s: s.update(latency=None), "add the bench step"),
        ("max_latency_ratio", 2.0, lambda s: s.update(latency=None), "add the bench step"),
        ("max_latency_ratio", 2.0, lambda s: s["latency"].pop("latency_ratio_high"), "add the bench step"),
        ("max_quality_drop", 0.5, lambda s: s.update(quality_drop=None), "held-out data"),
    ],
)
def test_a_budget_the_run_did_not_measure_fails_closed(budget, limit, unmeasure, fix):
    report = _report()
    unmeasure(report["summary"])
    (violation,) = check(report, Budgets(**{budget: limit}))
    assert violation.budget == budget
    assert violation.measured is None
    assert violation.message.startswith(f"{budget}: not measured: ")
    assert fix in violation.message


def test_a_nan_figure_fails():
    (violation,) = check(_report(p90_ms=math.nan), Budgets(max_p90_ms=1000.0))
    assert math.isnan(violation.measured)


def test_a_quality_gain_passes_a_zero_drop_budget():
    report = _report()
    report["summary"]["quality_drop"] = -0.002
    assert check(report, Budgets(max_quality_drop=0.0)) == []


def test_a_figure_of_the_wrong_type_is_a_broken_report_not_a_missing_one():
    with pytest.raises(UsageError, match=r"report summary\.latency\.p90_ms: '0\.21'"):
        check(_report(p90_ms="0.21"), Budgets(max_p90_ms=1.0))


def test_checked_lists_set_budgets_in_field_order():
    budgets = Budgets(require_parity=True, max_quality_drop=0.0, max_onnx_mb=1.0)
    assert budgets.checked() == ["max_onnx_mb", "max_quality_drop", "require_parity"]
    assert Budgets(require_parity=False).checked() == []


def test_flags_override_the_recipe_gates():
    report = _report(gates={"max_onnx_mb": 0.02, "max_p90_ms": 0.25, "require_parity": True})
    budgets = budgets_from(report, {"max_onnx_mb": 0.05, "max_params": None, "require_parity": False})
    assert budgets == Budgets(max_onnx_mb=0.05, max_p90_ms=0.25, require_parity=False)
    assert check(report, budgets) == []
    assert [v.budget for v in check(report, budgets_from(report, {}))] == ["max_onnx_mb"]


def test_a_report_without_gates_takes_the_flags_alone():
    report = _report()
    del report["recipe"]
    assert budgets_from(report, {"max_params": 10_000}) == Budgets(max_params=10_000)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"max_onnx_mb": 0}, "gates option max_onnx_mb: 0: input should be greater than 0 (allowed: > 0)"),
        ({"max_p90_ms": math.inf}, "gates option max_p90_ms: inf: input should be a finite number (allowed: > 0)"),
        ({"max_params": 1.5e6}, "gates option max_params: 1500000.0: input should be a valid integer (allowed: > 0)"),
        ({"max_latency_ratio": True}, "gates option max_latency_ratio: True: input should be a valid number (allowed: > 0)"),
        ({"max_quality_drop": -0.01}, "gates option max_quality_drop: -0.01: input should be greater than or equal to 0 (allowed: >= 0)"),
        ({"require_parity": "yes"}, "gates option require_parity: 'yes': input should be a valid boolean"),
        ({"max_onnx_size": 1}, "gates option: max_onnx_size: unknown; did you mean 'max_onnx_mb'?; the options are "),
    ],
)
def test_a_bad_budget_names_itself_its_value_and_the_allowed_range(values, expected):
    with pytest.raises(UsageError) as caught:
        parse_budgets(values)
    assert str(caught.value).startswith(expected)


def test_a_bad_recipe_gate_is_reported_like_a_bad_flag():
    with pytest.raises(UsageError, match=r"gates option max_params: -3: input should be greater than 0 \(allowed: > 0\)"):
        budgets_from(_report(gates={"max_params": -3}), {})


def test_read_report_returns_the_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()), encoding="utf-8")
    assert read_report(path) == _report()


@pytest.mark.parametrize(
    ("content", "fix"),
    [
        (None, "no such file"),
        ('{"schema_version": 1, "summary": ', "not JSON (Expecting value, line 1)"),
        ('[1, 2]', "has no 'summary' object"),
        ('{"schema_version": 2}', "has no 'summary' object"),
        ('{"schema_version": 1, "versions": {"compress": "0.1.0"}, "summary": {}}',
         "schema_version 1 (written by 0.1.0), this compress reads 2"),
    ],
)
def test_an_unreadable_report_is_a_usage_error_naming_the_file(tmp_path, content, fix):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        read_report(path)
    assert caught.value.thing == "report"
    assert caught.value.value == path
    assert fix in caught.value.fix


def test_junit_xml_has_a_testcase_per_budget_and_a_failure_per_violation():
    budgets = Budgets(**{**EVERY_BUDGET, "max_params": 5_000, "max_p90_ms": 0.2})
    violations = check(_report(), budgets)
    root = ET.fromstring(junit_xml(violations, budgets, "runs/digits/report.json"))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["compress.gate"]
    (suite,) = suites
    assert (suite.get("tests"), suite.get("failures")) == ("6", "2")
    assert [case.get("name") for case in suite.iter("testcase")] == budgets.checked()
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert failures["max_params"].get("message") == "max_params: final model has 6,134 params, budget 5,000"
    assert failures["max_onnx_mb"] is None
    assert suite.find("properties/property").get("value") == "runs/digits/report.json"


@settings(max_examples=60, deadline=None)
@given(
    budget=st.sampled_from(["max_onnx_mb", "max_p90_ms", "max_latency_ratio", "max_quality_drop"]),
    figure=st.floats(min_value=1e-3, max_value=1e4, allow_nan=False),
)
def test_a_budget_equal_to_the_figure_passes_and_any_smaller_fails(budget, figure):
    report = _report()
    summary = report["summary"]
    if budget == "max_onnx_mb":
        summary["final"]["onnx_bytes"] = round(figure * 1e6)
    elif budget == "max_p90_ms":
        summary["latency"]["p90_ms"] = figure
    elif budget == "max_latency_ratio":
        summary["latency"]["latency_ratio_high"] = figure
    else:
        summary[budget.removeprefix("max_")] = figure
    (measured,) = [v.measured for v in check(report, Budgets(**{budget: 1e-9}))]
    assert check(report, Budgets(**{budget: measured})) == []
    assert [v.budget for v in check(report, Budgets(**{budget: math.nextafter(measured, 0)}))] == [budget]


def test_the_latency_ratio_budget_reads_the_upper_end_of_the_interval():
    within = _report()
    within["summary"]["latency"].update(latency_ratio=1.01, latency_ratio_low=0.99, latency_ratio_high=1.03)
    assert check(within, Budgets(max_latency_ratio=1.05)) == []
    unsure = _report()
    unsure["summary"]["latency"].update(latency_ratio=1.01, latency_ratio_low=0.95, latency_ratio_high=1.07)
    (violation,) = check(unsure, Budgets(max_latency_ratio=1.05))
    assert violation.measured == 1.07 and "upper end" in violation.message
