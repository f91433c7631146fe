"""Budgets -> violations: compare the figures a run measured (report.json) with limits from the
recipe's `gates` or the command line, so a CI job fails when a model grows, slows down or loses
quality. A budget whose figure the report lacks fails (closed), naming the step that measures it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from compress.errors import UsageError
from compress.config import StrictConfig, build_config
from compress.reporting.digest import check_report
from compress.reporting.schema import REPORT_SCHEMA_VERSION

BYTES_PER_MB = 1_000_000


class Budgets(StrictConfig):
    """Limits on the final model; None leaves a budget unchecked. Strict (StrictConfig) so that a
    recipe's `max_onnx_mb: true` or `max_params: "1e6"` is an error rather than a silent 1.0."""

    max_onnx_mb: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="largest final ONNX file allowed, in MB (1 MB = 1,000,000 bytes)",
    )
    max_params: int | None = Field(
        None, gt=0, description="most parameters the final model may have"
    )
    max_p90_ms: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="slowest p90 latency allowed for the final ONNX model, in ms (at the bench step's first batch size and thread count)",
    )
    max_latency_ratio: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="largest final/original latency ratio allowed (0.5 = at least twice as fast), checked against the upper end of the paired ratio's 95% interval: the gate passes only when the model is within the budget with confidence, and machine noise widens the interval rather than flipping the verdict",
    )
    max_quality_drop: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="largest drop allowed in the primary quality metric, as a fraction (0.01 = 1 point); measured on the final ONNX when the run wrote one, else on the torch model",
    )
    require_parity: bool | None = Field(
        None, description="require the ONNX parity check to have run and passed"
    )

    def checked(self) -> list[str]:
        """Names of the budgets this instance checks, in field order (require_parity=False checks nothing)."""
        return [name for name, value in self if value is not None and value is not False]


@dataclass(frozen=True)
class Violation:
    """A budget the report broke; `measured` is None when the report did not measure the figure."""

    budget: str
    measured: float | None
    limit: float | None
    message: str


@dataclass(frozen=True)
class Reading:
    """One checked budget: the figure, the limit, the verdict, and both figures as text for tables.
    For require_parity, `measured` is the max abs diff and `limit` the report's tolerance."""

    budget: str
    measured: float | None
    limit: float | None
    passed: bool
    message: str
    measured_text: str
    limit_text: str


@dataclass(frozen=True)
class _Figure:
    path: tuple[str, ...]  # where the figure sits under report["summary"]
    per_unit: int  # report units per budget unit; dividing keeps 1.1e6 bytes exactly 1.1 MB
    decimals: int
    unit: str
    sentence: str  # {measured} {limit} {metric} {source} are filled in
    missing: str  # the fix when the report lacks the figure


# What a step must produce (compress.context.Produced) for a budget to be measured at all; a
# recipe whose steps give none of it is refused when it is read (compress.recipe).
BUDGET_NEEDS = {"max_onnx_mb": "onnx", "max_p90_ms": "latency", "max_latency_ratio": "latency", "require_parity": "parity"}

_FIGURES = {
    "max_onnx_mb": _Figure(("final", "onnx_bytes"), BYTES_PER_MB, 2, " MB",
                           "final ONNX is {measured}, budget {limit}", "add the export step"),
    "max_params": _Figure(("final", "params"), 1, 0, "",
                          "final model has {measured} params, budget {limit}",
                          "regenerate the report with compress run"),
    "max_p90_ms": _Figure(("latency", "p90_ms"), 1, 2, " ms",
                          "final p90 is {measured}, budget {limit}", "add the bench step"),
    "max_latency_ratio": _Figure(("latency", "latency_ratio_high"), 1, 2, "x",
                                 "final latency is up to {measured} the original's (95% interval's upper end), budget {limit}",
                                 "add the bench step"),
    "max_quality_drop": _Figure(("quality_drop",), 1, 4, "",
                                "{metric} of the {source} dropped by {measured}, budget {limit}",
                                "give the run held-out data so it measures quality"),
}


def read_report(path: str | os.PathLike) -> dict:
    """Load a report.json a compress run wrote; a UsageError names the file and the fix."""
    path = Path(path)
    fix = "pass the report.json that compress run wrote"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("report", path, f"no such file; {fix}") from None
    except IsADirectoryError:
        raise UsageError("report", path, f"is a folder; {fix}") from None
    except UnicodeDecodeError:
        raise UsageError("report", path, f"not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as exc:
        raise UsageError("report", path, f"not JSON ({exc.msg}, line {exc.lineno}); {fix}") from None
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict):
        raise UsageError("report", path, f"has no 'summary' object; {fix}")
    version = report.get("schema_version")
    if version != REPORT_SCHEMA_VERSION:
        writer = (report.get("versions") or {}).get("compress", "an unknown compress")
        raise UsageError(
            "report", path,
            f"schema_version {version!r} (written by {writer}), this compress reads "
            f"{REPORT_SCHEMA_VERSION}; regenerate the report with this compress",
        )
    check_report(report, path)
    return report


def parse_budgets(values: Mapping[str, object]) -> Budgets:
    """Budgets from a mapping (recipe gates, CLI flags); a bad value -> UsageError naming the budget,
    the value and the allowed range."""
    return build_config(Budgets, values, "gates")


def budgets_from(report: Mapping, overrides: Mapping[str, object]) -> Budgets:
    """The recipe's gates recorded in the report, with every non-None override on top."""
    recipe = report.get("recipe")
    gates = (recipe.get("gates") if isinstance(recipe, Mapping) else None) or {}
    if not isinstance(gates, Mapping):
        raise UsageError("recipe gates", gates, "must be a mapping of budget name to limit")
    given = {name: value for name, value in overrides.items() if value is not None}
    return parse_budgets({**gates, **given})


def read_budgets(report: Mapping, budgets: Budgets) -> list[Reading]:
    """Every checked budget against the report's summary, in field order."""
    summary = report.get("summary") or {}
    readings = []
    for name in budgets.checked():
        if name == "require_parity":
            readings.append(_read_parity(summary))
        else:
            readings.append(_read_figure(summary, name, getattr(budgets, name)))
    return readings


def check(report: Mapping, budgets: Budgets) -> list[Violation]:
    """The budgets the report breaks; an empty list means the model is within every budget."""
    return violations_of(read_budgets(report, budgets))


def violations_of(readings: Sequence[Reading]) -> list[Violation]:
    return [Violation(r.budget, r.measured, r.limit, r.message) for r in readings if not r.passed]


def junit_xml(violations: Sequence[Violation], budgets: Budgets, report_path: str | os.PathLike) -> str:
    """A JUnit XML document: one testsuite `compress.gate`, one testcase per checked budget, a
    <failure> for each violation, so CI systems show which budget failed."""
    names = budgets.checked()
    broken = {v.budget: v for v in violations}
    counts = {"tests": str(len(names)), "failures": str(len(broken)), "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", name="compress gate", **counts)
    suite = ET.SubElement(root, "testsuite", name="compress.gate", **counts)
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="report", value=str(report_path))
    for name in names:
        case = ET.SubElement(suite, "testcase", classname="compress.gate", name=name)
        if name in broken:
            failure = ET.SubElement(case, "failure", message=broken[name].message, type="BudgetViolated")
            failure.text = broken[name].message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _read_figure(summary: Mapping, name: str, limit: float) -> Reading:
    figure = _FIGURES[name]
    raw = _number(summary, figure.path, "summary")
    if raw is None:
        message = f"{name}: not measured: {figure.missing}"
        limit_text = _format(limit, figure.decimals) + figure.unit
        return Reading(name, None, limit, False, message, "not measured", limit_text)
    measured = raw if figure.per_unit == 1 else raw / figure.per_unit  # params stay an int
    measured_text, limit_text = (text + figure.unit for text in _distinct(measured, limit, figure.decimals))
    metric = summary.get("quality_metric") or "quality"
    source = {"onnx": "final ONNX", "torch": "final torch model"}.get(summary.get("quality_measured_on"), "final model")
    sentence = figure.sentence.format(measured=measured_text, limit=limit_text, metric=metric, source=source)
    passed = measured <= limit  # False for a NaN figure, which must fail
    return Reading(name, measured, limit, passed, f"{name}: {sentence}", measured_text, limit_text)


def _read_parity(summary: Mapping) -> Reading:
    parity = summary.get("parity")
    if parity is None:
        return Reading("require_parity", None, None, False,
                       "require_parity: not measured: add the export step", "not measured", "must pass")
    if not isinstance(parity, Mapping) or not isinstance(parity.get("passed"), bool):
        raise UsageError("report summary.parity", parity,
                         "must be null or hold passed, max_abs_diff, tolerance; regenerate the report")
    diff = _number(parity, ("max_abs_diff",), "summary.parity")
    tolerance = _number(parity, ("tolerance",), "summary.parity")
    verdict = "passed" if parity["passed"] else "failed"
    measured_text = f"max abs diff {_scientific(diff)}"
    limit_text = f"tolerance {_scientific(tolerance)}"
    message = f"require_parity: ONNX parity {verdict}, {measured_text}, {limit_text}"
    return Reading("require_parity", diff, tolerance, parity["passed"], message, measured_text, limit_text)


def _number(mapping: Mapping, path: tuple[str, ...], where: str) -> float | None:
    """The figure at `path`, None when absent or null; anything else that is not a number is a
    broken report, not a missing measurement."""
    value: object = mapping
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        dotted = ".".join((where, *path))
        raise UsageError(f"report {dotted}", repr(value), "must be a number or null; regenerate the report")
    return value


def _format(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def _distinct(measured: float, limit: float, decimals: int) -> tuple[str, str]:
    """Both figures with enough decimals to tell them apart, so a failure never reads
    '0.50 MB, budget 0.50 MB'."""
    while measured != limit and decimals < 9 and _format(measured, decimals) == _format(limit, decimals):
        decimals += 1
    return _format(measured, decimals), _format(limit, decimals)


def _scientific(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1e}"
