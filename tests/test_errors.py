"""UsageError: one line `thing: value: fix`, with a long value cut (a path shown whole)."""

from __future__ import annotations

from pathlib import Path

from compress.errors import MAX_VALUE_CHARS, UsageError


def test_a_long_value_is_cut_with_an_ellipsis_and_the_fix_kept():
    message = str(UsageError("recipe model", "m" * 10_000, "give a model name"))
    assert message == f"recipe model: {'m' * (MAX_VALUE_CHARS - 1)}…: give a model name"


def test_short_values_and_paths_are_shown_whole():
    assert str(UsageError("opset", 9, "use 17")) == "opset: 9: use 17"
    long_path = Path("/tmp") / ("d" * 200) / "recipe.yaml"
    assert str(UsageError("recipe", long_path, "file not found")) == f"recipe: {long_path}: file not found"
