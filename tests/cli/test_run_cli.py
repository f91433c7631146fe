from __future__ import annotations

import json

import pytest

from cli_checks import one_line_error
from compress.cli.main import cli

TINY = ["run", "--model", "tiny_models:cnn"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs without --out go to ./runs/<model>


_one_line_error = one_line_error


def test_chained_passes_write_a_report(runner, tmp_path):
    result = runner.invoke(cli, [*TINY, "--out", str(tmp_path / "x"), "--json", "export", "--opset", "17",
                                 "bench", "--min-calls", "20", "--warmup", "1", "--max-seconds", "1"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["steps"]] == ["export", "bench"]
    assert report["steps"][0]["config"]["opset"] == 17
    assert json.loads((tmp_path / "x" / "report.json").read_text())["summary"]["parity"]["passed"]
    assert "[1/2] export" in result.stderr  # progress goes to stderr, results to stdout


def test_recipe_gates_fail_the_run_with_exit_1(runner, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps: [export]\ngates: {max_onnx_mb: 0.000001}\n")
    result = runner.invoke(cli, [*TINY, "--out", str(tmp_path / "x"), "--recipe", str(recipe)])
    _one_line_error(result, 1, "max_onnx_mb")
    assert json.loads((tmp_path / "x" / "report.json").read_text())["gates"]["violations"]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--model", "missing.pt", "export"], ["model: missing.pt", "not found"]),
        ([*TINY, "exprot"], ["No such command 'exprot'"]),
        ([*TINY, "export", "--opset", "9"], ["'--opset'", "9 is not in the range 17<=x<=21"]),
        ([*TINY, "export", "--opset", "x"], ["'--opset'", "'x' is not a valid integer range"]),
        ([*TINY, "export", "--tolerance", "-1"], ["'--tolerance'", "-1.0 is not in the range 0<x<=1"]),
        ([*TINY, "bench", "--batch-sizes", "two"], ["'--batch-sizes'", "'two' is not a valid integer range"]),
        ([*TINY, "bench", "export"], ["step 1 (bench): needs an ONNX file of the current model: put export before bench"]),
        ([*TINY, "--out", "/proc/forbidden", "export"], ["output folder", "/proc/forbidden"]),
        ([*TINY, "--recipe", "nope.yaml"], ["recipe: nope.yaml", "not found"]),
        ([*TINY, "--data", "digits:val", "export"], ["data: digits:val", "digits:test"]),
        (["run", "--model", "tiny_models:cnn", "--input-shape", "1,x", "export"], ["'--input-shape'", "'1,x' is not a shape"]),
    ],
)
def test_bad_input_exits_2_with_one_line(runner, args, needles):
    _one_line_error(runner.invoke(cli, args), 2, *needles)


def test_malformed_recipe(runner, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps: [export\n")
    _one_line_error(runner.invoke(cli, [*TINY, "--recipe", str(recipe)]), 2, "not valid YAML", "line")
    recipe.write_text("version: 1\nsteps:\n  - export: {opset: 17, colour: red}\n")
    _one_line_error(runner.invoke(cli, [*TINY, "--recipe", str(recipe)]), 2, "colour", "unknown")


def test_debug_shows_the_traceback(runner):
    result = runner.invoke(cli, ["--debug", "run", "--model", "missing.pt", "export"])
    assert result.exit_code == 1  # the exception itself propagates, with its traceback
    assert type(result.exception).__name__ == "UsageError" and str(result.exception).startswith("model: missing.pt: not found")


def test_version_names_the_libraries(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    for name in ("compress 0.1.0", "torch 2.13.0", "onnx ", "onnxruntime "):
        assert name in result.stdout


def test_passes_lists_every_pass(runner):
    result = runner.invoke(cli, ["passes", "--json"])
    schemas = json.loads(result.stdout)
    assert {"export", "bench"} <= set(schemas)
    assert "opset" in schemas["export"]["properties"]


def test_bad_checkpoints_exit_2_with_one_line(runner, tmp_path):
    import torch
    from safetensors.torch import save_file

    from tiny_models import seeded_cnn

    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    _one_line_error(runner.invoke(cli, [*TINY, "--weights", str(tmp_path / "cut.safetensors"), "export"]), 2,
                    "weights", "truncated or corrupt")
    save_file(seeded_cnn(width=8).state_dict(), str(tmp_path / "wide.safetensors"))
    _one_line_error(runner.invoke(cli, [*TINY, "--weights", str(tmp_path / "wide.safetensors"), "export"]), 2,
                    "do not fit the model", "stem.0.weight file [8, 1, 3, 3] vs model [4, 1, 3, 3]")
    (tmp_path / "notes.txt").write_text("hello")
    _one_line_error(runner.invoke(cli, [*TINY, "--weights", str(tmp_path / "notes.txt"), "export"]), 2,
                    "unknown weights type .txt")
    torch.save(seeded_cnn(), tmp_path / "full.pt")
    _one_line_error(runner.invoke(cli, ["run", "--model", str(tmp_path / "full.pt"), "export"]), 2, "--trust-pickle")


def test_interrupt_and_internal_errors_are_one_line(runner, monkeypatch):
    from compress.passes import PASSES

    interrupted = runner.invoke(cli, ["run", "--model", "tiny_models:interrupted", "export"])
    _one_line_error(interrupted, 130, "interrupted")

    def bug_in_compress(*_):
        raise RuntimeError("a bug of ours")

    monkeypatch.setitem(PASSES, "export", PASSES["export"]._replace(fn=bug_in_compress))
    buggy = runner.invoke(cli, [*TINY, "export"])
    _one_line_error(buggy, 1, "internal error: RuntimeError: a bug of ours", "--debug")


def test_cuda_where_torch_has_none_is_refused_before_loading(runner, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = runner.invoke(cli, [*TINY, "--device", "cuda", "--out", str(tmp_path / "x"), "export"])
    _one_line_error(result, 2, "device: cuda:", "sees no CUDA device; use --device cpu")
    assert not (tmp_path / "x").exists()
    _one_line_error(runner.invoke(cli, [*TINY, "--device", "tpu", "export"]), 2, "'--device': 'tpu' is not one of 'cpu', 'cuda'")


def test_the_runs_seed_reaches_the_context_and_the_report(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn_without_inputs", "--input-shape", "1,1,8,8", "--seed", "7",
                                 "--out", str(tmp_path / "x"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["seed"] == 7 and report["model"]["source"]["seed"] == 7
