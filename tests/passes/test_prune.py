"""The `prune` pass: ratio and budgets, importance from data, bad input as one line."""

from __future__ import annotations

import pytest

from cli_checks import one_line_error
import torch
from tiny_models import seeded_cnn

from compress.context import Context
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.metrics import mac_count, param_count
from compress.passes.prune import PruneConfig, prune
from compress.recipe import make_step


def _wide(seed=0):
    return load("tiny_models:cnn").replace(module=seeded_cnn(seed, width=16), example_inputs=(torch.randn(1, 1, 8, 8),))


def _run(model, tmp_path, log=None, **options):
    return prune(model, PruneConfig(**options), Context(run_dir=tmp_path, teacher=model, log=log or (lambda _: None)))


def test_digits_at_half_loses_three_quarters_of_its_macs(tmp_path):
    digits = load("digits")
    result = _run(digits, tmp_path, ratio=0.5)
    assert mac_count(result.model.module, digits.example_inputs) * 3.9 < mac_count(digits.module, digits.example_inputs)
    assert result.figures["channels_kept"] * 2 == result.figures["channels"]
    assert result.model.edits[-1]["kind"] == "prune_channels"
    assert digits.module.conv1.out_channels == 16  # the input model is untouched


def test_a_macs_budget_is_met_with_the_least_pruning(tmp_path):
    model = _wide()
    dense = mac_count(model.module, model.example_inputs)
    result = _run(model, tmp_path, target_macs=int(dense * 0.6), round_to=1)
    reached = mac_count(result.model.module, model.example_inputs)
    assert reached <= dense * 0.6 and reached > dense * 0.4
    assert result.figures["reached"] == reached and result.figures["target"] == "--target-macs"


@pytest.mark.parametrize(("option", "fraction", "message"), [
    ("target_params", 2.0, "already met: the model has"),
    ("target_params", 1e-4, "unreachable: the best reached is"),
])
def test_met_and_unreachable_budgets_are_bad_input_with_the_figure(tmp_path, option, fraction, message):
    model = _wide()
    with pytest.raises(UsageError, match=message):
        _run(model, tmp_path, **{option: max(1, int(param_count(model.module) * fraction))}, round_to=1)


def test_taylor_needs_data_and_reads_it(tmp_path):
    digits = load("digits")
    with pytest.raises(UsageError, match="taylor.*--data digits:train"):
        _run(digits, tmp_path, ratio=0.5, importance="taylor")
    with pytest.raises(UsageError, match="held-out"):
        prune(digits, PruneConfig(ratio=0.5, importance="taylor", data="digits:test"),
              Context(run_dir=tmp_path, teacher=digits, heldout_spec="digits:test"))
    logged = []
    result = _run(digits, tmp_path, ratio=0.5, importance="taylor", data="digits:train", taylor_batches=2, log=logged.append)
    assert any("taylor importance from 64 samples of digits:train" in line for line in logged)
    assert result.figures["importance"] == "taylor"


def test_an_ignore_glob_matching_nothing_is_named(tmp_path):
    logged = []
    _run(_wide(), tmp_path, ratio=0.5, round_to=1, ignore=("stme.*",), log=logged.append)
    assert any("--ignore 'stme.*' matches no module" in line for line in logged)


def test_a_quantized_model_is_refused_with_the_order_to_use(tmp_path):
    model = _wide().replace(edits=({"kind": "quantize_qdq"},))
    with pytest.raises(UsageError, match="already quantized.*prune first"):
        _run(model, tmp_path, ratio=0.5)


@pytest.mark.parametrize("options", [{"ratio": 1.0}, {"ratio": 0}, {"ratio": 0.5, "target_macs": 10}, {"target_macs": 10, "head_ratio": 0.5}])
def test_bad_options_are_refused_when_the_step_is_built(options):
    with pytest.raises(UsageError):
        make_step("prune", options)


def test_cli_ratio_out_of_range_is_one_line_exit_2(runner, tmp_path):
    from compress.cli.main import cli

    result = runner.invoke(cli, ["run", "--model", "digits", "--out", str(tmp_path / "r"), "prune", "--ratio", "1.5"])
    one_line_error(result, 2, "'--ratio': 1.5 is not in the range 0<x<1")  # click refuses it from the Field bounds


WIDE = ["run", "--model", "tiny_models:wide_cnn", "--input-shape", "1,1,8,8"]


@pytest.mark.parametrize(("args", "needles"), [
    ([*WIDE, "prune", "--target-params", "100000000"], ["--target-params", "already met: the model has 770 parameters"]),
    ([*WIDE, "prune", "--target-params", "3", "--round-to", "1"], ["--target-params: 3: unreachable: the best reached is", "ask for at least"]),
    (["run", "--model", "tiny_models:cnn", "prune", "--ratio", "0.5", "--round-to", "16"], ["--round-to: 16", "block.0's width 4", "--ignore"]),
    (["run", "--model", "tiny_models:channel_shuffle", "prune", "--round-to", "1"], ["prune: a (reshape, transpose)", "--ignore 'a'"]),
    pytest.param(["run", "--model", "tiny_models:cnn", "--data", "digits:test", "qat", "--steps", "1", "--data", "digits:train", "prune"],
                 ["already quantized", "prune first, then quantize"], marks=pytest.mark.slow),  # 7 s: qat runs first
])
def test_cli_refuses_bad_prune_input_with_one_line(runner, tmp_path, args, needles):
    from compress.cli.main import cli

    result = runner.invoke(cli, _with_out(args, tmp_path / "x"))
    one_line_error(result, 2, *needles)
    assert not (tmp_path / "x" / "report.json").exists()


def test_cli_warns_about_an_ignore_glob_matching_nothing(runner, tmp_path):
    from compress.cli.main import cli

    result = runner.invoke(cli, _with_out([*WIDE, "prune", "--ignore", "stme.*"], tmp_path / "x"))
    assert result.exit_code == 0, result.stderr
    assert "prune: warning: --ignore 'stme.*' matches no module of wide_cnn" in result.stderr


def _with_out(args: list[str], out) -> list[str]:
    """`args` with `--out OUT` after the run options, before the first step."""
    first_step = min(args.index(step) for step in ("prune", "qat") if step in args)
    return [*args[:first_step], "--out", str(out), *args[first_step:]]
