from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compress.errors import UsageError
from compress.passes import PASSES
from compress.recipe import default_recipe, make_step, parse_recipe, read_recipe


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
    assert [s.name for s in recipe.steps] == ["prune", "synthesize", "distill", "qat", "export", "bench"]
    # Data-free: every training step reads the synthetic set, no real image (issues 13 and 14).
    assert recipe.steps[2].config.data == "synthetic" and recipe.steps[3].config.data in (None, "synthetic")
    assert recipe.steps[3].config.bits == "8"
    assert recipe.gates.max_quality_drop is not None and recipe.gates.max_latency_ratio is not None


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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tolerance": True}, "step 1 (export) option tolerance: True: input should be a valid number"),
        ({"opset": "18"}, "step 1 (export) option opset: '18': input should be a valid integer"),
        ({"opset": 18.0}, "step 1 (export) option opset: 18.0: input should be a valid integer"),
        ({"filename": 5}, "step 1 (export) option filename: 5: input should be a valid string"),
    ],
)
def test_configs_are_strict(options, message):
    with pytest.raises(UsageError) as caught:
        parse_recipe(_recipe([{"export": options}]), "r.yaml")
    assert str(caught.value).startswith(message)


def test_an_int_is_a_float_and_a_list_is_a_tuple():
    recipe = parse_recipe(_recipe([{"export": {"tolerance": 1}}, {"bench": {"batch_sizes": [1, 8]}}]), "r.yaml")
    assert recipe.steps[0].config.tolerance == 1.0 and recipe.steps[1].config.batch_sizes == (1, 8)
    with pytest.raises(UsageError, match=r"step 2 \(bench\) option batch_sizes.0: True: input should be a valid integer"):
        parse_recipe(_recipe([{"export": {}}, {"bench": {"batch_sizes": [True]}}]), "r.yaml")


def test_every_problem_of_a_recipe_is_reported_at_once_in_one_line():
    text = _recipe([{"export": {"opset": "18", "tolerance": True}}, {"bnch": {}}, {"bench": {"min_calls": 0}}],
                   {"max_onnx_mb": -1}) + "extra: 1\n"
    with pytest.raises(UsageError) as caught:
        parse_recipe(text, "r.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("input: 6 problems: ")
    for part in ("recipe key: extra: unknown", "step 1 (export) option opset: '18'", "step 1 (export) option tolerance: True",
                 "recipe step 2 pass: bnch: unknown; did you mean 'bench'?", "step 3 (bench) option min_calls: 0",
                 "gates option max_onnx_mb: -1"):
        assert part in message, part


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version: "1"\nsteps: [export]\n', "recipe version: '1': must be the integer 1 (write version: 1, without quotes)"),
        ("version: true\nsteps: [export]\n", "recipe version: True: this compress reads version: 1"),
        ("version: 2\nsteps: [export]\n", "recipe version: 2: this compress reads version: 1"),
    ],
)
def test_the_version_is_the_integer_one(text, message):
    with pytest.raises(UsageError) as caught:
        parse_recipe(text, "r.yaml")
    assert str(caught.value) == message


BOMB = "\n".join(["version: 1", "a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
                 + ["steps: [export]"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)  # a short relative name: messages cap a value at 80 characters
    path = Path("bomb.yaml")
    path.write_text(BOMB)
    assert len(BOMB) < 500  # 9**9 values once expanded
    started = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        read_recipe(path)
    assert time.perf_counter() - started < 1.0
    assert str(caught.value) == f"recipe: {path}: expands to more than 10,000 values through YAML aliases (&/*); write the values out"


def test_a_recipe_that_contains_itself_is_refused():
    with pytest.raises(UsageError, match="expands to more than 10,000 values"):
        parse_recipe("version: 1\nsteps: &s [export, *s]\n", "r.yaml")


def test_a_huge_recipe_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\nsteps: [export]\n" + "#" * 1_000_001)
    with pytest.raises(UsageError, match=r"is 1,000,028 bytes; a recipe is at most 1,000,000"):
        read_recipe(path)


def test_a_long_bad_value_is_cut_in_the_one_line_message():
    with pytest.raises(UsageError) as caught:
        parse_recipe(_recipe([{"export": {"filename": "x" * 5000}}]), "r.yaml")
    message = str(caught.value)
    assert len(message) < 300 and "…" in message and message.startswith("step 1 (export) option filename: xxxx")


def test_a_budget_no_step_can_measure_is_refused_when_read():
    text = _recipe([{"export": {}}], {"max_p90_ms": 5.0, "max_latency_ratio": 0.5, "max_onnx_mb": 1.0})
    with pytest.raises(UsageError) as caught:
        parse_recipe(text, "r.yaml")
    assert str(caught.value) == ("input: 2 problems: gates max_p90_ms: 5.0: needs latency figures, which no step gives; add bench "
                                 "to the steps; gates max_latency_ratio: 0.5: needs latency figures, which no step gives; add bench to the steps")
    assert parse_recipe(_recipe([{"export": {}}], {"require_parity": False, "max_params": 10}), "r.yaml").gates.max_params == 10


def test_a_bad_item_is_one_problem_not_two():
    with pytest.raises(UsageError) as caught:
        parse_recipe(_recipe([{"export": {}}, {"bench": {"batch_sizes": [0]}}]), "r.yaml")
    assert str(caught.value) == "step 2 (bench) option batch_sizes.0: 0: input should be greater than or equal to 1"
