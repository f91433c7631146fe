"""The two ways a run ends badly, with their exit codes on the class (click's habit).

`UsageError` is bad input: the CLI prints one line naming the thing, the bad value and the fix,
then exits 2. `RunFailed` is a run that started from good input and failed on a measured figure
(parity, a non-finite output, an unmet gate): exit 1 with that figure.
"""

from __future__ import annotations

from pathlib import PurePath


class CompressError(Exception):
    exit_code = 1


# A bad value is shown up to this many characters: a recipe can hold a megabyte in one value, and
# the message is one line. Paths are shown whole, so the user can find the file.
MAX_VALUE_CHARS = 80


class UsageError(CompressError):
    exit_code = 2

    def __init__(self, thing: str, value: object, fix: str) -> None:
        self.thing, self.value, self.fix = thing, value, fix
        super().__init__(f"{thing}: {shown(value)}: {fix}")


def shown(value: object) -> str:
    """`value` as text for a one-line message, cut to MAX_VALUE_CHARS with an ellipsis (paths whole)."""
    if isinstance(value, PurePath):
        return str(value)
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


class RunFailed(CompressError):
    exit_code = 1
