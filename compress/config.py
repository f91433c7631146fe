"""Build a frozen config from user values; the first problem becomes one UsageError line that
names where it is, the key, the bad value, and the fix ("did you mean", the allowed range)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from compress.errors import UsageError

C = TypeVar("C", bound=BaseModel)


def build_config(cls: type[C], options: Mapping[str, Any], where: str) -> C:
    try:
        return cls(**options)
    except ValidationError as exc:
        raise validation_error(cls, exc, where) from None


def validation_error(cls: type[BaseModel], exc: ValidationError, where: str) -> UsageError:
    error = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in error["loc"]) or "(options)"
    fields = cls.model_fields
    if error["type"] == "extra_forbidden":
        return UsageError(f"{where} option", key, f"unknown{did_you_mean(key, fields)}; the options are {', '.join(fields)}")
    info = fields.get(str(error["loc"][0])) if error["loc"] else None
    allowed = allowed_range(info) if info is not None else ""
    return UsageError(f"{where} option {key}", error.get("input"), f"{error['msg'].lower()}{allowed}")


def allowed_range(info: Any) -> str:
    """The bounds declared on a field, so the message cannot drift from the validation."""
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
