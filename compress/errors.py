"""The two ways a run ends badly, with their exit codes on the class (click's habit).

`UsageError` is bad input: the CLI prints one line naming the thing, the bad value and the fix,
then exits 2. `RunFailed` is a run that started from good input and failed on a measured figure
(parity, a non-finite output, an unmet gate): exit 1 with that figure.
"""

from __future__ import annotations


class CompressError(Exception):
    exit_code = 1


class UsageError(CompressError):
    exit_code = 2

    def __init__(self, thing: str, value: object, fix: str) -> None:
        self.thing, self.value, self.fix = thing, value, fix
        super().__init__(f"{thing}: {value!s}: {fix}")


class RunFailed(CompressError):
    exit_code = 1
