"""Options shared by several commands: how to name a model, and click options made from a pass
config's fields (the field descriptions are the help text: written once)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from compress.config import field_bounds


def parse_shape(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    shapes = []
    for text in values:
        try:
            shape = tuple(int(part) for part in text.split(","))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise click.BadParameter(f"{text!r} is not a shape; write positive sizes separated by commas, e.g. 1,3,32,32", param=param)
        shapes.append(shape)
    return tuple(shapes)


def model_options(func: Callable) -> Callable:
    """--weights, --input-shape, --seq-len, --task, --trust-pickle, --output: how to load a model spec."""
    for option in reversed([
        click.option("--weights", type=click.Path(dir_okay=False), help="Weights for a pkg.module:factory model: .safetensors or a .pt state dict."),
        click.option("--input-shape", "input_shapes", multiple=True, callback=parse_shape, help="Example input shape, e.g. 1,3,32,32 (repeat for several inputs)."),
        click.option("--seq-len", type=click.IntRange(1, 8192), default=None, help="Sequence length of a text model's example inputs, text data and bench [default: the model's own, 128 for text encoders]."),
        click.option("--task", type=click.Choice(["classification", "embedding"]), default=None, help="What the model's output is (default: inferred)."),
        click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled full module (it can run code when loaded)."),
        click.option("--output", "output_name", default=None, metavar="NAME", help="For a model whose forward returns a dict, tuple or dataclass: the output to use (a key, field or index; default: logits, else last_hidden_state, else the first tensor)."),
    ]):
        func = option(func)
    return func


def load_model(spec: str, weights: str | None, input_shapes, seq_len: int | None, task: str | None, trust_pickle: bool,
               output_name: str | None = None, seed: int = 0):
    from compress.cli.render import progress_logger
    from compress.loading.checkpoint import load

    return load(spec, weights=weights, input_shapes=input_shapes, seq_len=seq_len, task=task, trust_pickle=trust_pickle,
                output=output_name, seed=seed, log=progress_logger())


def config_options(config: type[BaseModel], aliases: Mapping[str, Sequence[str]] | None = None) -> list[click.Option]:
    """One click option per config field, built from the field alone: `--name-with-dashes` (plus
    any `aliases`), the description as help, the type and its bounds as a click type (IntRange /
    FloatRange with the Field's bounds, Choice for a Literal, a --x/--no-x pair for a bool, a
    repeatable option with the item's type for a tuple). Every option defaults to None, so an
    option left out stays out and the config's own default applies."""
    return [_option(name, info, tuple((aliases or {}).get(name, ()))) for name, info in config.model_fields.items()]


def _option(name: str, info: FieldInfo, aliases: tuple[str, ...]) -> click.Option:
    flag = "--" + name.replace("_", "-")
    annotation = _strip_optional(info.annotation)
    repeatable = typing.get_origin(annotation) in (tuple, list)
    help_text = (info.description or "") + (" (repeatable)" if repeatable else "") \
        + ("" if info.default is None else f" [default: {_default(info.default)}]")
    if annotation is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
    if repeatable:
        item, constraints = _unwrap(typing.get_args(annotation)[0])
        return click.Option([flag, *aliases, name], type=_click_type(item, constraints), multiple=True, default=None, help=help_text)
    item, constraints = _unwrap(annotation)
    return click.Option([flag, *aliases, name], type=_click_type(item, [*constraints, *info.metadata]), default=None, help=help_text)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[int, Strict(), Field(ge=1)]` -> (int, [its constraints])."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, []
    base, *extras = typing.get_args(annotation)
    constraints = [c for extra in extras for c in (extra.metadata if isinstance(extra, FieldInfo) else [extra])]
    return base, constraints


def _click_type(annotation: Any, constraints: list[Any]) -> click.ParamType:
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation in (int, float):
        bounds: dict[str, Any] = {}
        for sign, value in field_bounds(constraints):
            side = "min" if sign.startswith(">") else "max"
            bounds[side], bounds[f"{side}_open"] = value, "=" not in sign
        if annotation is int:
            return click.IntRange(**bounds) if bounds else click.INT
        return click.FloatRange(**bounds) if bounds else click.FLOAT
    return click.STRING


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def with_options(options: list[click.Option]) -> Callable[[Callable], Callable]:
    """Attach built options to a click command function, in their order."""
    def decorate(func: Callable) -> Callable:
        func.__click_params__ = [*getattr(func, "__click_params__", []), *reversed(options)]  # click's own store, last first
        return func

    return decorate


def given(options: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user gave (click passes None or () for the rest)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v is not None and v != ()}
