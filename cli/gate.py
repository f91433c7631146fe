"""`compress gate REPORT.json`: check a run's report against budgets, for CI.

Budgets come from the recipe's `gates` recorded in the report, with flags on top. The result goes
to stdout (a table, or JSON with --json); on any violation stderr gets one line and the exit code
is 1, so the table is still there to read in the CI log.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from compress import atomic
from compress.cli import render
from compress.cli.options import config_options, with_options
from compress.errors import UsageError
from compress.reporting.gate import Budgets, Reading, budgets_from, junit_xml, read_budgets, read_report, violations_of


def _flags() -> str:
    return ", ".join("--" + name.replace("_", "-") for name in Budgets.model_fields)


@click.command("gate")
@click.argument("report_path", metavar="REPORT.json", type=click.Path(path_type=Path))
@with_options(config_options(Budgets))  # one option per budget, from the Budgets fields
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="also write the result as JUnit XML to FILE, for CI test reports")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON instead of a table")
@click.pass_context
def gate(ctx: click.Context, report_path: Path, junit_path: Path | None, as_json: bool, **overrides: object) -> None:
    """Check REPORT.json against budgets: the recipe's gates, overridden by flags. Exit 1 if any
    budget is violated; a budget the run did not measure counts as violated."""
    report = read_report(report_path)
    budgets = budgets_from(report, overrides)
    if not budgets.checked():
        raise UsageError("gate", "no budgets", f"pass {_flags()} or put gates in the recipe")
    readings = read_budgets(report, budgets)
    violations = violations_of(readings)
    if junit_path is not None:
        atomic.write_text(junit_path, junit_xml(violations, budgets, report_path))
    if as_json:
        render.echo_json(_as_json(report_path, readings))
    else:
        _print_table(report_path, readings)
    if violations:
        click.echo(f"gate: {len(violations)} budget(s) violated", err=True)
        ctx.exit(1)
    click.echo(f"gate: all {len(readings)} budget(s) met", err=True)


def _as_json(report_path: Path, readings: list[Reading]) -> dict:
    return {
        "report": str(report_path),
        "passed": all(r.passed for r in readings),
        "budgets": [dataclasses.asdict(r) for r in readings],
        "violations": [r.message for r in readings if not r.passed],
    }


def _print_table(report_path: Path, readings: list[Reading]) -> None:
    rows = [[r.budget, r.measured_text, r.limit_text, "[green]PASS[/]" if r.passed else "[red]FAIL[/]"]
            for r in readings]
    table = render.table(f"compress gate: {report_path}", ["budget", "measured", "limit", "result"], rows)
    render.stdout().print(table)
    failed = [r.message for r in readings if not r.passed]
    if failed:
        # Plain lines, not table cells, so long messages are never wrapped or cut in a CI log.
        click.echo("violations:")
        for message in failed:
            click.echo(f"  {message}")
