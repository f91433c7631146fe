"""The one option builder: click options from a config's pydantic fields, so every command's
options, ranges and help come from the fields themselves."""

from __future__ import annotations

from typing import Annotated, Literal

import click
from click.testing import CliRunner
from pydantic import Field, Strict

from compress.cli.options import config_options, given, with_options
from compress.config import StrictConfig, build_config


class Sample(StrictConfig):
    sizes: tuple[Annotated[int, Strict(), Field(ge=1, le=64)], ...] = Field((1,), description="sizes to try")
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction removed")
    engine: Literal["ort", "inc"] = Field("ort", description="which engine")
    verbose: bool = Field(False, description="say more")
    budget: float | None = Field(None, ge=0, description="optional budget")
    name: str = Field("x", description="a name")


@click.command()
@with_options(config_options(Sample, aliases={"sizes": ["--size"]}))
def sample(**options):
    click.echo(repr(build_config(Sample, given(options), "sample option")))


def _run(*args):
    return CliRunner().invoke(sample, list(args))


def test_options_convert_to_the_config_and_unset_ones_keep_its_defaults():
    result = _run("--size", "2", "--sizes", "8", "--ratio", "0.25", "--engine", "inc", "--verbose")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Sample(sizes=(2, 8), ratio=0.25, engine='inc', verbose=True, budget=None, name='x')"
    assert _run().stdout.strip() == repr(Sample())


def _refused(result, needle: str) -> None:
    # A bare click command shows click's usage block; under `compress` it becomes one line
    # (tests/cli/test_main.py). Here only the builder's range and choice are checked.
    assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_bad_values_get_clicks_message_naming_the_option():
    _refused(_run("--ratio", "1"), "'--ratio': 1.0 is not in the range 0<x<1")
    _refused(_run("--size", "65"), "'--sizes' / '--size': 65 is not in the range 1<=x<=64")
    _refused(_run("--engine", "trt"), "'--engine': 'trt' is not one of 'ort', 'inc'")
    _refused(_run("--budget", "-1"), "'--budget': -1.0 is not in the range x>=0")


def test_help_shows_types_ranges_choices_and_defaults():
    text = " ".join(CliRunner().invoke(sample, ["--help"]).stdout.split())
    for part in ("--sizes, --size INTEGER RANGE sizes to try (repeatable) [default: 1] [1<=x<=64]",
                 "--ratio FLOAT RANGE fraction removed [default: 0.5] [0<x<1]",
                 "--engine [ort|inc] which engine [default: ort]",
                 "--verbose / --no-verbose say more [default: False]",
                 "--budget FLOAT RANGE optional budget [x>=0]"):
        assert part in text, part
    assert "ANNOTATED" not in text
