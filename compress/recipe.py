"""Recipes: YAML <-> the list of steps and the gates, built only from the `PASSES` table.

```yaml
version: 1
model: digits          # optional; --model on the command line wins
steps:
  - export: {opset: 17}
  - bench: {batch_sizes: [1, 8]}
gates:
  max_quality_drop: 0.005
```
Every problem is a UsageError naming the step, the key, the bad value and the fix: unknown passes
and keys get a "did you mean", out-of-range values get the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from compress.errors import UsageError
from compress.reporting.gate import Budgets
from compress.passes import PASSES
from compress.pipeline import Step, check_order
from compress.config import build_config, did_you_mean

RECIPE_VERSION = 1
TOP_KEYS = ("version", "model", "steps", "gates")


@dataclass(frozen=True)
class Recipe:
    """Steps in an order where each has what it needs (checked here, so a wrong order is refused
    when the recipe is read or the command line parsed, before any step runs), and the gates."""

    steps: tuple[Step, ...]
    gates: Budgets = field(default_factory=Budgets)
    model: str | None = None

    def __post_init__(self) -> None:
        check_order(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECIPE_VERSION,
            "model": self.model,
            "steps": [{s.name: s.config.model_dump(mode="json")} for s in self.steps],
            "gates": self.gates.model_dump(mode="json", exclude_none=True),
        }


def read_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError("recipe", path, "file not found; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("recipe", path, f"cannot be read as text ({exc}); give a YAML file") from exc
    return parse_recipe(text, str(path))


def default_recipe() -> Recipe:
    text = resources.files("compress").joinpath("recipes/default.yaml").read_text(encoding="utf-8")
    return parse_recipe(text, "default recipe")


def parse_recipe(text: str, origin: str) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin} line {mark.line + 1}" if mark else origin
        raise UsageError("recipe", where, f"is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    if not isinstance(data, dict):
        raise UsageError("recipe", origin, "must be a YAML mapping with version, steps and optional gates")
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError("recipe key", key, f"unknown{did_you_mean(key, TOP_KEYS)}; the keys are {', '.join(TOP_KEYS)}")
    if data.get("version") != RECIPE_VERSION:
        raise UsageError("recipe version", data.get("version"), f"this compress reads version: {RECIPE_VERSION}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UsageError("recipe steps", raw_steps, "give a list of steps, e.g. [{export: {opset: 17}}]")
    steps = tuple(_parse_step(item, i) for i, item in enumerate(raw_steps))
    gates = build_config(Budgets, data.get("gates") or {}, "gates")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError("recipe model", model, "give a model name or path as a string")
    return Recipe(steps, gates, model)


def _parse_step(item: Any, index: int) -> Step:
    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise UsageError(f"recipe step {index + 1}", item, "each step is one mapping: {pass_name: {option: value}}")
    ((name, options),) = item.items()
    return make_step(name, options or {}, f"step {index + 1} ({name})")


def make_step(name: str, options: dict[str, Any], where: str | None = None) -> Step:
    if name not in PASSES:
        raise UsageError("pass", name, f"unknown{did_you_mean(name, PASSES)}; the passes are {', '.join(PASSES)}")
    if not isinstance(options, dict):
        raise UsageError(where or name, options, "options must be a mapping of option: value")
    return Step(name, build_config(PASSES[name].config, options, where or name))
