"""Tables on stdout, progress and messages on stderr (rich)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from compress.distributed import launched


def stdout() -> Console:
    return Console(file=sys.stdout, soft_wrap=False, highlight=False, width=160)  # sys.stdout at call time: CliRunner swaps it


def progress_logger() -> Any:
    if not launched().main:  # under torchrun, rank 0 speaks for all
        return lambda _: None
    console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    return lambda message: console.print(f"[dim]{message}[/dim]")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        numeric = all(_looks_numeric(row[i]) for row in rows)
        t.add_column(column, justify="right" if numeric and i > 0 else "left")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


NUMBER = re.compile(r"^-?[\d,]*\.?\d+(e[-+]?\d+)?x?$")


def _looks_numeric(value: Any) -> bool:
    """Numbers, and numbers already formatted as text ("1,251", "1.06x"), align right."""
    return value is None or isinstance(value, (int, float)) or (isinstance(value, str) and bool(NUMBER.match(value)))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def warn(message: str) -> None:
    click.echo(f"compress: {message}", err=True)


