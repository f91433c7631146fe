from __future__ import annotations

import pytest
import yaml

from compress.errors import UsageError
from compress.passes import PASSES
from compress.recipe import default_recipe, make_step, parse_recipe


def _recipe(steps, gates=None) -> str:
    return yaml.safe_dump({"version": 1, "steps": steps, **({"gates": gates} if gates else {})})


@pytest.mark.parametrize("name", sorted(PASSES), ids=sorted(PASSES))
def test_every_pass_config_round_trips_through_a_recipe(name):
    step = make_step(name, {})
    before = [{"export": {}}] if "onnx" in PASSES[name].needs else []  # what the pass needs first
    recipe = parse_recipe(_recipe([*before, {name: step.config.model_dump(mode="json")}]), "test")
    assert recipe.steps[-1].config == step.config
    again = parse_recipe(yaml.safe_dump(recipe.to_dict()), "again")
    assert again.steps == recipe.steps and again.gates == recipe.gates


def test_default_recipe_parses():
    recipe = default_recipe()
    assert recipe.model == "digits"
    assert [s.name for s in recipe.steps][:1] == ["export"]
    assert recipe.gates.max_quality_drop is not None


@pytest.mark.parametrize(
    "text, message",
    [
        (_recipe([{"exprot": {}}]), "unknown; did you mean 'export'"),
        (_recipe([{"export": {"opsett": 17}}]), "opsett: unknown; did you mean 'opset'"),
        (_recipe([{"export": {"opset": 11}}]), r"allowed: >= 17 and <= 21"),
        (_recipe([{"export": {"tolerance": -1}}]), r"allowed: > 0"),
        (_recipe([{"export": {}}], {"max_onnx_mbb": 1}), "did you mean 'max_onnx_mb'"),
        ("version: 1\nsteps: [export\n", "line"),
        ("version: 2\nsteps: [export]\n", "reads version: 1"),
        ("version: 1\nstep: [export]\n", "did you mean 'steps'"),
        ("version: 1\nsteps: []\n", "give a list of steps"),
        ("- just a list\n", "YAML mapping"),
    ],
)
def test_bad_recipes_name_the_problem(text, message):
    with pytest.raises(UsageError, match=message):
        parse_recipe(text, "r.yaml")


def test_a_step_may_be_a_bare_name():
    recipe = parse_recipe("version: 1\nsteps: [export]\n", "r.yaml")
    assert recipe.steps[0].config.opset == 17
