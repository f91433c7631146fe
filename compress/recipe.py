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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from compress.errors import UsageError
from compress.reporting.gate import BUDGET_NEEDS, Budgets
from compress.passes import PASSES
from compress.pipeline import Step, check_order, export_first
from compress.config import build_config, combine, did_you_mean

RECIPE_VERSION = 1
TOP_KEYS = ("version", "model", "steps", "gates")
# A recipe is a few lines; these bounds keep a hostile or mistaken file cheap to refuse.
MAX_RECIPE_BYTES = 1_000_000
MAX_YAML_NODES = 10_000


@dataclass(frozen=True)
class Recipe:
    """Steps in an order where each has what it needs (checked here, so a wrong order is refused
    when the recipe is read or the command line parsed, before any step runs), and the gates."""

    steps: tuple[Step, ...]
    gates: Budgets = field(default_factory=Budgets)
    model: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", export_first(self.steps))  # frozen: set once, here
        check_order(self.steps)
        check_gates(self.steps, self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECIPE_VERSION,
            "model": self.model,
            "steps": [{s.name: s.config.model_dump(mode="json")} for s in self.steps],
            "gates": self.gates.model_dump(mode="json", exclude_none=True),
        }


def check_gates(steps: tuple[Step, ...], gates: Budgets) -> None:
    """Refuse budgets no step can measure (max_p90_ms without a bench step, ...): such a gate
    could only fail, and only at the end of the run."""
    given = {kind for step in steps for kind in PASSES[step.name].gives}
    errors = []
    for name in gates.checked():
        need = BUDGET_NEEDS.get(name)
        if need is not None and need not in given:
            givers = " or ".join(n for n, spec in PASSES.items() if need in spec.gives and need not in spec.needs)
            errors.append(UsageError(f"gates {name}", getattr(gates, name), f"needs {need} figures, which no step gives; add {givers} to the steps"))
    if errors:
        raise combine(errors)


def read_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise UsageError("recipe", path, f"is {size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,} (steps and gates take a few lines)")
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
    """The recipe in `text`; every problem in it (top keys, version, each step's options, gates,
    model) is reported at once in one UsageError, then the order of the steps is checked."""
    if len(text) > MAX_RECIPE_BYTES:
        raise UsageError("recipe", origin, f"is {len(text):,} characters; a recipe is at most {MAX_RECIPE_BYTES:,}")
    data = load_yaml(text, origin)
    if not isinstance(data, dict):
        raise UsageError("recipe", origin, "must be a YAML mapping with version, steps and optional gates")
    errors: list[UsageError] = []
    steps: list[Step] = []
    for key in data:
        if key not in TOP_KEYS:
            errors.append(UsageError("recipe key", key, f"unknown{did_you_mean(key, TOP_KEYS)}; the keys are {', '.join(TOP_KEYS)}"))
    version = data.get("version")
    if type(version) is not int or version != RECIPE_VERSION:  # type(): True == 1 and "1" are not the version
        fix = f"must be the integer {RECIPE_VERSION} (write version: {RECIPE_VERSION}, without quotes)" if isinstance(version, str) and version.strip() == str(RECIPE_VERSION) \
            else f"this compress reads version: {RECIPE_VERSION}"
        errors.append(UsageError("recipe version", repr(version) if isinstance(version, str) else version, fix))
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        errors.append(UsageError("recipe steps", raw_steps, "give a list of steps, e.g. [{export: {opset: 17}}]"))
    else:
        steps = _collect(errors, [partial(_parse_step, item, i) for i, item in enumerate(raw_steps)])
    gates = _collect(errors, [partial(build_config, Budgets, data.get("gates") or {}, "gates")])
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        errors.append(UsageError("recipe model", model, "give a model name or path as a string"))
    if errors:
        raise combine(errors)
    return Recipe(tuple(steps), gates[0], model)


def _collect(errors: list[UsageError], makers: Iterable[Callable[[], Any]]) -> list[Any]:
    """What each maker builds; a maker's UsageError goes to `errors` instead, so all are reported."""
    built = []
    for make in makers:
        try:
            built.append(make())
        except UsageError as exc:
            errors.append(exc)
    return built


def load_yaml(text: str, origin: str) -> Any:
    """`yaml.safe_load`, refusing a document whose aliases expand to more than MAX_YAML_NODES
    values (a "billion laughs" of a few hundred bytes would otherwise take minutes and gigabytes)
    or that refers to itself. The check walks the composed node graph once, before anything is
    constructed."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise UsageError("recipe", origin, f"expands to more than {MAX_YAML_NODES:,} values through YAML aliases (&/*); write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin} line {mark.line + 1}" if mark else origin
        raise UsageError("recipe", where, f"is not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under `node` with every alias expanded, counted per distinct node (memoized), so
    the count costs one visit per node however large the expansion; a cycle counts as too many."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MAX_YAML_NODES + 1  # seen again before it is done: the node contains itself
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_YAML_NODES:
            break
    sizes[key] = total
    return total


def _parse_step(item: Any, index: int) -> Step:
    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise UsageError(f"recipe step {index + 1}", item, "each step is one mapping: {pass_name: {option: value}}")
    ((name, options),) = item.items()
    if name not in PASSES:
        raise UsageError(f"recipe step {index + 1} pass", name, f"unknown{did_you_mean(name, PASSES)}; the passes are {', '.join(PASSES)}")
    return make_step(name, options or {}, f"step {index + 1} ({name})")


def make_step(name: str, options: dict[str, Any], where: str | None = None) -> Step:
    if name not in PASSES:
        raise UsageError("pass", name, f"unknown{did_you_mean(name, PASSES)}; the passes are {', '.join(PASSES)}")
    if not isinstance(options, dict):
        raise UsageError(where or name, options, "options must be a mapping of option: value")
    return Step(name, build_config(PASSES[name].config, options, where or name))
