"""Configs from user values: the strict base every pass config and the gate budgets share, and
pydantic's errors turned into one UsageError line that names where each problem is, the key, the
bad value and the fix ("did you mean", the allowed range). Every problem is reported at once."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from compress.errors import UsageError

C = TypeVar("C", bound=BaseModel)


class StrictConfig(BaseModel):
    """Frozen, no unknown keys, and strict: `tolerance: true` is not 1.0 and `opset: "18"` is not
    18 (pydantic's lax mode would accept both). An int is still a float. Command-line options are
    converted by click's types before they get here, so only recipes and the Python API meet it.

    YAML and JSON have lists, not tuples: a list given for a tuple field is taken as that tuple
    (strict mode alone would refuse it); its items are still validated strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        tuples = {name for name, info in cls.model_fields.items() if _is_tuple(info.annotation)}
        return {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()}


def _is_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(annotation))  # tuple[...] | None


def build_config(cls: type[C], options: Mapping[str, Any], where: str) -> C:
    try:
        return cls(**options)
    except ValidationError as exc:
        raise validation_error(cls, exc, where) from None


def validation_error(cls: type[BaseModel], exc: ValidationError, where: str) -> UsageError:
    """One UsageError for every problem pydantic found (one line, problems joined with '; ').
    An error about a whole field is left out when one of its items has its own (a bad item also
    fails the tuple's length check after validation)."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    kept = [e for e in errors if not any(len(other) > len(e["loc"]) and other[: len(e["loc"])] == tuple(e["loc"]) for other in locs)]
    return combine([_one_error(cls, error, where) for error in kept])


def combine(errors: list[UsageError]) -> UsageError:
    """One error as it is; several (flattened when they were combined before) as one line that
    counts them and lists each; `problems` keeps them apart for callers that need them."""
    problems = [p for e in errors for p in getattr(e, "problems", [e])]
    if len(problems) == 1:
        return problems[0]
    combined = UsageError(problems[0].thing if len({e.thing for e in problems}) == 1 else "input",
                          f"{len(problems)} problems", "; ".join(str(e) for e in problems))
    combined.problems = problems
    return combined


def _one_error(cls: type[BaseModel], error: Any, where: str) -> UsageError:
    key = ".".join(str(p) for p in error["loc"]) or "(options)"
    fields = cls.model_fields
    if error["type"] == "extra_forbidden":
        return UsageError(f"{where} option", key, f"unknown{did_you_mean(key, fields)}; the options are {', '.join(fields)}")
    info = fields.get(str(error["loc"][0])) if error["loc"] else None
    allowed = allowed_range(info) if info is not None else ""
    value = error.get("input")
    # A string of the wrong type is quoted, so `'18'` reads apart from 18.
    shown = repr(value) if isinstance(value, str) and error["type"].endswith("_type") else value
    return UsageError(f"{where} option {key}", shown, f"{error['msg'].lower()}{allowed}")


def allowed_range(info: Any) -> str:
    """The bounds declared on a field, so the message cannot drift from the validation."""
    bounds = [f"{sign} {value}" for sign, value in field_bounds(info.metadata)]
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def field_bounds(metadata: Iterable[Any]) -> list[tuple[str, Any]]:
    """(sign, value) for every gt / ge / lt / le among a field's constraints."""
    found = []
    for meta in metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                found.append((sign, getattr(meta, attr)))
    return found


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
