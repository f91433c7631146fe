"""`compress gate`: table/JSON on stdout, one line on stderr, exit 0 / 1 / 2, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from cli_checks import one_line_error

main = pytest.importorskip("compress.cli.main", reason="compress.cli.main is not wired yet")


def _write_report(tmp_path, gates: dict | None = None) -> str:
    """A digits-CNN report: 27,481-byte ONNX, 6,134 params, p90 0.21 ms, accuracy 0.9811 -> 0.9755."""
    final = {"params": 6_134, "macs": 402_000, "bytes": 24_536, "onnx_bytes": 27_481,
             "p50_ms": 0.18, "p90_ms": 0.21, "quality": {"accuracy": 0.9755}}
    report = {
        "schema_version": 2,
        "versions": {"compress": "0.1.0", "torch": "2.13.0", "onnx": "1.17.0", "onnxruntime": "1.20.1"},
        "recipe": {"version": 1, "steps": [{"prune": {"ratio": 0.5}}, {"export": {}}, {"bench": {}}],
                   "gates": gates or {}},
        "summary": {
            "original": {**final, "params": 23_466, "onnx_bytes": 96_212, "p90_ms": 0.48,
                         "quality": {"accuracy": 0.9811}},
            "final": final,
            "quality_metric": "accuracy",
            "quality_measured_on": "onnx",
            "quality_drop": 0.0056,
            "latency": {"batch": 1, "threads": 1, "p50_ms": 0.18, "p90_ms": 0.21, "latency_ratio": 0.4375,
                        "latency_ratio_low": 0.4301, "latency_ratio_high": 0.4452},
            "parity": {"passed": True, "max_abs_diff": 2.4e-06, "tolerance": 1e-04},
        },
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    return str(path)


def _gate(*args: str):
    return CliRunner().invoke(main.cli, ["gate", *args])


def test_within_budget_exits_0_with_a_pass_row_per_budget(tmp_path):
    result = _gate(_write_report(tmp_path), "--max-onnx-mb", "0.03", "--max-params", "6500", "--require-parity")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "PASS" in line or "FAIL" in line]
    assert len(rows) == 3 and all("PASS" in row for row in rows)
    # 0.027481 MB against 0.03 MB: one more decimal so the two figures read apart.
    assert "0.027 MB" in result.stdout and "0.030 MB" in result.stdout and "6,134" in result.stdout
    assert result.stderr == "gate: all 3 budget(s) met\n"


def test_a_violation_exits_1_keeping_the_table_on_stdout_and_one_line_on_stderr(tmp_path):
    result = _gate(_write_report(tmp_path), "--max-params", "5000", "--max-p90-ms", "0.25")
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "PASS" in result.stdout
    assert "  max_params: final model has 6,134 params, budget 5,000\n" in result.stdout
    assert result.stderr == "gate: 1 budget(s) violated\n"


def test_recipe_gates_apply_and_flags_override_them(tmp_path):
    report = _write_report(tmp_path, gates={"max_p90_ms": 0.2, "require_parity": True})
    assert _gate(report).exit_code == 1
    assert _gate(report, "--max-p90-ms", "0.3").exit_code == 0


def test_no_require_parity_switches_off_the_recipe_parity_gate(tmp_path):
    report = _write_report(tmp_path, gates={"require_parity": True, "max_params": 6500})
    result = _gate(report, "--no-require-parity", "--json")
    assert result.exit_code == 0, result.output
    assert [b["budget"] for b in json.loads(result.stdout)["budgets"]] == ["max_params"]


def test_json_output_carries_figures_limits_and_verdicts(tmp_path):
    result = _gate(_write_report(tmp_path), "--max-onnx-mb", "0.02", "--max-quality-drop", "0.01", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["passed"] is False
    assert [(b["budget"], b["measured"], b["limit"], b["passed"]) for b in out["budgets"]] == [
        ("max_onnx_mb", 0.027481, 0.02, False),
        ("max_quality_drop", 0.0056, 0.01, True),
    ]
    assert out["violations"] == ["max_onnx_mb: final ONNX is 0.03 MB, budget 0.02 MB"]


def test_junit_file_holds_the_failures(tmp_path):
    junit = tmp_path / "ci" / "gate.xml"
    result = _gate(_write_report(tmp_path), "--max-params", "5000", "--max-p90-ms", "0.1",
                   "--max-latency-ratio", "0.5", "--junit", str(junit))
    assert result.exit_code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    assert len(suite.findall("testcase/failure")) == 2
    assert not list(junit.parent.glob(".gate.xml.*"))  # the atomic write left no temp file


def test_no_budgets_is_a_usage_error(tmp_path):
    result = _gate(_write_report(tmp_path))
    assert result.exit_code == 2
    assert "no budgets" in result.stderr and "--max-onnx-mb" in result.stderr
    assert result.stdout == ""


def test_a_bad_budget_value_is_a_usage_error(tmp_path):
    one_line_error(_gate(_write_report(tmp_path), "--max-onnx-mb", "-1"), 2, "'--max-onnx-mb': -1.0 is not in the range x>0")
    one_line_error(_gate(_write_report(tmp_path), "--max-params", "1e6"), 2, "'--max-params': '1e6' is not a valid integer range")
    one_line_error(_gate(_write_report(tmp_path), "--max-p90-ms", "inf"), 2,
                   "gates option max_p90_ms: inf: input should be a finite number (allowed: > 0)")


def test_a_report_that_is_not_json_is_a_usage_error(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{not json", encoding="utf-8")
    result = _gate(str(path), "--max-params", "10")
    assert result.exit_code == 2
    assert str(path) in result.stderr and "not JSON" in result.stderr


def test_help_shows_the_budget_descriptions():
    result = _gate("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # click wraps help at 80 columns
    assert "--max-onnx-mb FLOAT RANGE largest final ONNX file allowed, in MB (1 MB = 1,000,000 bytes) [x>0]" in text
    assert "--max-params INTEGER RANGE most parameters the final model may have [x>0]" in text
    assert "--require-parity / --no-require-parity" in text
    assert "--require-parity / --no-require-parity require the ONNX parity check" in text
