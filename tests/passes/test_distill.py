from __future__ import annotations

import json

import pytest
import torch

from compress.cli.main import cli
from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.metrics import accuracy, top1_agreement
from compress.passes.distill import DistillConfig, distill
from compress.pipeline import run
from compress.recipe import make_step
from compress.predict import torch_outputs
from compress.train import FitConfig, fit
from cli_checks import one_line_error

TINY = ["run", "--model", "tiny_models:cnn_without_inputs", "--input-shape", "1,1,32,32", "--data", "digits:test"]


@pytest.fixture(scope="module")
def tiny_teacher():
    """The tiny CNN (mean-pooled, so it takes 32x32 digits), trained briefly on digits:train with
    `fit` so that its predictions differ between images (random weights give one class for all)."""
    teacher = load("tiny_models:wide_cnn", input_shapes=((1, 1, 32, 32),))
    cross_entropy = lambda module, batch: torch.nn.functional.cross_entropy(module(*batch.inputs), batch.labels)  # noqa: E731
    fit(teacher.module, cross_entropy, load_data("digits:train"), FitConfig(steps=80, lr=2e-2, batch_size=64))
    return teacher.replace(module=teacher.module.requires_grad_(False).eval())


def _perturbed(teacher):
    student = teacher.copy()
    student.module.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5 * p.abs().mean())
    return student


def _ctx(tmp_path, teacher):
    return Context(run_dir=tmp_path, teacher=teacher, data={"heldout": load_data("digits:test")}, heldout_spec="digits:test")


def test_distill_makes_a_perturbed_student_agree_more_with_its_teacher(tmp_path, tiny_teacher):
    teacher, student = tiny_teacher, _perturbed(tiny_teacher)
    heldout = load_data("digits:test")
    reference = torch_outputs(teacher, heldout)
    before_state = {k: v.clone() for k, v in student.module.state_dict().items()}
    before = top1_agreement(torch_outputs(student, heldout), reference)
    config = DistillConfig(data="digits:train", steps=60, lr=1e-2, batch_size=32, eval_every=20)
    result = distill(student, config, _ctx(tmp_path, teacher))
    after = top1_agreement(torch_outputs(result.model, heldout), reference)
    assert after > before + 0.1, (before, after)
    figures = result.figures
    # The best state is picked on a slice of digits:train held aside (10% of 1437), never on the
    # held-out split, by agreement with the teacher (synthetic data has no labels).
    assert figures["validation_metric"] == "agreement" and figures["validation_samples"] == 143
    assert figures["validation_start"] < figures["validation_best"]
    assert figures["steps"] == 60 and figures["best_step"] in (20, 40, 60) and figures["loss_end"] < figures["loss_start"]
    # The pass works on a copy, and writes the KD curve (atomically: no temp file left).
    assert all(torch.equal(v, before_state[k]) for k, v in student.module.state_dict().items())
    assert result.artifacts["kd_curve"] == tmp_path / "kd_curve.png"
    assert result.artifacts["kd_curve"].read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kd_curve.png"]


@pytest.mark.parametrize("args, needles", [
    (["distill", "--data", "digits:test"], ["train data: digits:test", "held-out", "digits:train"]),
    (["distill", "--data", "digits:tran"], ["data: digits:tran", "did you mean"]),
    (["distill", "--data", "digits:train", "--kl", "0", "--ce", "0"], ["distill", "all 0"]),
    (["distill", "--data", "digits:train", "--temperature", "0"], ["'--temperature'", "0.0 is not in the range 0<x<=100"]),
])
def test_cli_refuses_bad_distill_input_with_one_line(runner, tmp_path, args, needles):
    result = runner.invoke(cli, [*TINY, "--out", str(tmp_path / "x"), *args])
    one_line_error(result, 2, *needles)
    assert not (tmp_path / "x" / "report.json").exists()


def test_without_data_a_model_without_batchnorm_is_refused(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn_without_bn", "--out", str(tmp_path / "x"), "distill"])
    one_line_error(result, 2, "synthesize", "BatchNorm", "--data")


def test_without_data_distill_trains_on_the_runs_synthetic_set(tmp_path, tiny_teacher):
    teacher, student = tiny_teacher, _perturbed(tiny_teacher)
    ctx = _ctx(tmp_path, teacher)
    record = run(student, [make_step("synthesize", {"images": 16, "batch_size": 8, "steps": 2}),
                           make_step("distill", {"steps": 3, "eval_every": 0})], ctx)
    figures = record.steps[1].figures
    assert figures["data"].startswith("synthetic (16 inputs") and "synthetic_images" not in figures
    assert record.model.module is not student.module


@pytest.mark.slow  # synthesize's defaults: 128 inputs, 100 steps a batch (4-18 s here)
def test_without_a_synthesize_step_distill_makes_the_set_itself(tmp_path):
    from compress.distill.settings import InversionSettings

    teacher = load("tiny_models:cnn")
    result = distill(teacher.copy(), DistillConfig(steps=2, eval_every=0), Context(run_dir=tmp_path, teacher=teacher))
    assert result.figures["synthetic_images"] == InversionSettings().images and result.figures["data"].startswith("synthetic")
    assert result.artifacts["synthetic"] == tmp_path / "synthetic.safetensors" and result.artifacts["synthetic"].is_file()


def test_cli_distill_run_reports_its_figures(runner, tmp_path):
    result = runner.invoke(cli, [*TINY, "--out", str(tmp_path / "x"), "--json", "distill", "--data", "digits:train",
                                 "--steps", "4", "--batch-size", "16", "--eval-every", "2"])
    assert result.exit_code == 0, result.stderr
    step = json.loads(result.stdout)["steps"][0]
    assert step["name"] == "distill" and step["figures"]["steps"] == 4
    assert step["artifacts"]["kd_curve"].endswith("kd_curve.png")
    assert "fit: step 2/4" in result.stderr  # progress on stderr


@pytest.mark.slow
def test_distill_recovers_a_noised_digits_model(tmp_path):
    """The bundled width-16 digits teacher; a copy with Gaussian noise of half each tensor's spread
    on every weight falls to about 12% test accuracy; 100 KD steps on digits:train bring it back."""
    teacher = load("digits")
    teacher.module.requires_grad_(False)
    heldout = load_data("digits:test")
    student = teacher.copy()
    student.module.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5 * p.std())
    assert accuracy(torch_outputs(student, heldout), heldout.labels) < 0.5
    # No held-out evaluation: the figure is the last state's, not one picked on the test split.
    config = DistillConfig(data="digits:train", steps=100, batch_size=32, eval_every=0)
    result = distill(student, config, _ctx(tmp_path, teacher))
    assert accuracy(torch_outputs(result.model, heldout), heldout.labels) >= 0.99
    assert result.figures["best_step"] == 100 and result.figures["validation_best"] is None


@pytest.mark.slow
def test_distill_raises_a_pruned_minilms_cosine_with_hidden_states(tmp_path):
    """The real MiniLM with a quarter of its heads and half its FFN neurons pruned, 30 KD steps on
    text:train with the hidden-state term: the held-out cosine to the original goes up."""
    from compress.passes.prune import PruneConfig, prune

    teacher = load("minilm")
    teacher.module.requires_grad_(False)
    ctx = Context(run_dir=tmp_path, teacher=teacher, data={"heldout": load_data("text:heldout", teacher).head(128)},
                  heldout_spec="text:heldout")
    pruned = prune(load("minilm"), PruneConfig(head_ratio=0.25, ffn_ratio=0.5), ctx).model
    result = distill(pruned, DistillConfig(data="text:train", steps=30, hidden=1.0, eval_every=15), ctx)
    figures = result.figures
    assert figures["validation_metric"] == "cosine_mean" and figures["lr"] == 5e-4
    assert figures["validation_best"] > figures["validation_start"] + 0.05, figures


@pytest.mark.parametrize("args", [
    ["run", "--model", "no_such_model", "--data", "digits:test"],  # refused before the model is loaded
    ["run", "--model", "digits"],  # the bundled model's own held-out spec: refused before any step runs
])
def test_distill_on_the_heldout_spec_is_refused_when_the_recipe_is_read(runner, tmp_path, args):
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "x"), "prune", "distill", "--data", "digits:test"])
    one_line_error(result, 2, "train data: digits:test", "held-out", "digits:train")
    assert "[1/2] prune" not in result.stderr


def test_without_dropout_the_student_trains_deterministic_and_keeps_its_rates():
    from compress.passes.distill import _dropout

    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5)).train()
    x = torch.randn(4, 8)
    with _dropout(module, active=False):
        assert torch.equal(module(x), module(x))  # in training mode, yet the same output twice
    assert module[1].p == 0.5
    with _dropout(module, active=True):
        assert not torch.equal(module(x), module(x))


@pytest.mark.parametrize("given, synthetic, images, expected", [
    ({}, False, True, (150, 32)),  # real data
    ({}, True, True, (400, 64)),  # a synthetic set of images: more, larger steps
    ({}, True, False, (400, 32)),  # synthetic token sequences
    ({"steps": 7, "batch_size": 5}, True, True, (7, 5)),  # what the user gives wins
])
def test_the_default_schedule_follows_the_kind_of_data(given, synthetic, images, expected):
    from compress.passes.distill import schedule

    assert schedule(DistillConfig(**given), synthetic, images) == expected


def test_a_synthetic_set_trains_whole_and_keeps_the_last_state_its_curve_only_watching_heldout(tmp_path):
    teacher = load("tiny_models:cnn")
    heldout = load_data("digits:test", teacher)
    ctx = Context(run_dir=tmp_path, teacher=teacher, data={"heldout": heldout}, heldout_spec="digits:test")
    record = run(teacher.copy(), [make_step("synthesize", {"images": 16, "batch_size": 8, "steps": 2}),
                                  make_step("distill", {"steps": 4, "eval_every": 2})], ctx)
    figures = record.steps[1].figures
    # all 16 inputs train, nothing is held aside, and the last state is what comes back
    assert figures["validation_samples"] == 0 and figures["validation_metric"] is None and figures["best_step"] == 4
    assert figures["data"].startswith("synthetic (16 inputs")
    assert figures["heldout_curve_metric"] == "agreement" and 0 <= figures["heldout_curve_final"] <= 1
    assert (tmp_path / "kd_curve.png").is_file()
