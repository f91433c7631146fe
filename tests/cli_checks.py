"""The one check every bad-input CLI test makes: the exit code, no traceback, and one message line
(`compress: thing: value: fix`, or click's own words for an option click refused, on the same one
line) that names what was wrong."""

from __future__ import annotations


def one_line_error(result, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    if exit_code == 2:  # a user's mistake is never blamed on compress
        assert "internal error" not in result.stderr, result.stderr
    messages = [line for line in result.stderr.splitlines() if line.startswith("compress: ")]
    assert len(messages) == 1 and result.stderr.strip().endswith(messages[0]), result.stderr
    assert "Usage:" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in messages[0], (needle, messages[0])
    return messages[0]
