"""`compress synthesize`: writes the set and its pictures (token sequences for a text encoder);
refuses a model with neither BatchNorm nor text inputs and a set made from another teacher with
exit 2 and one line."""

from __future__ import annotations

import json

from cli_checks import one_line_error
from compress.cli.main import cli
from tiny_families import saved_text_family

FAST = ["--images", "8", "--batch-size", "4", "--steps", "2"]


def test_synthesize_writes_the_set_and_its_pictures(runner, tmp_path):
    result = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn", "--out", str(tmp_path / "s"), "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["figures"]["images"] == 8 and report["settings"]["steps"] == 2 and len(report["teacher_sha256"]) == 64
    for name in ("synthetic.safetensors", "synthetic_samples.png", "synthetic_bn.png"):
        assert (tmp_path / "s" / name).stat().st_size > 0
    again = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn", "--out", str(tmp_path / "t"), *FAST])
    assert again.exit_code == 0 and "reusing cached set" in again.stderr
    assert "bn_loss_after" in again.stdout


def test_plain_deepinversion_at_full_resolution_writes_its_set_and_pictures(runner, tmp_path):
    # --downsample 1 optimises the inputs themselves: the set must leave the optimiser as plain tensors.
    result = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn", "--out", str(tmp_path / "s"), *FAST, "--downsample", "1"])
    assert result.exit_code == 0, result.stderr
    for name in ("synthetic.safetensors", "synthetic_samples.png", "synthetic_bn.png"):
        assert (tmp_path / "s" / name).stat().st_size > 0


def test_a_model_without_batchnorm_is_refused_with_exit_2(runner, tmp_path):
    result = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn_without_bn", "--out", str(tmp_path / "s"), *FAST])
    one_line_error(result, 2, "synthesize", "BatchNorm", "not a text encoder", "real data")
    assert not (tmp_path / "s" / "synthetic.safetensors").exists()


def test_a_set_from_another_teacher_is_refused_with_exit_2(runner, tmp_path):
    made = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn", "--out", str(tmp_path / "s"), *FAST])
    assert made.exit_code == 0, made.stderr
    result = runner.invoke(cli, ["synthesize", "--model", "tiny_models:wide_cnn", "--input-shape", "1,1,8,8", "--out", str(tmp_path / "w"),
                                 "--set-file", str(tmp_path / "s" / "synthetic.safetensors")])
    one_line_error(result, 2, "synthetic set", "hash mismatch")


def test_bad_settings_are_refused_with_their_range(runner, tmp_path):
    result = runner.invoke(cli, ["synthesize", "--model", "tiny_models:cnn", "--out", str(tmp_path / "s"), "--steps", "0"])
    one_line_error(result, 2, "'--steps': 0 is not in the range 1<=x<=100000")  # click, from the Field bounds


def test_synthesize_runs_as_a_step_of_a_run(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "r"), "--json", "synthesize", *FAST])
    assert result.exit_code == 0, result.stderr
    step = json.loads(result.stdout)["steps"][0]
    assert step["name"] == "synthesize" and step["figures"]["images"] == 8
    assert (tmp_path / "r" / "synthetic.safetensors").is_file() and (tmp_path / "r" / "synthetic_samples.png").is_file()


def test_a_text_encoder_gets_token_sequences(runner, tmp_path):
    model, _ = saved_text_family(tmp_path)
    result = runner.invoke(cli, ["synthesize", "--model", str(tmp_path / "bert_text"), "--seq-len", "16", "--out", str(tmp_path / "s"),
                                 "--sequences", "20", "--text-method", "diverse", "--pool", "2"])
    assert result.exit_code == 0, result.stderr
    assert "teacher_output_cosine_mean" in result.stdout and "synthetic_samples.txt" in result.stdout
    assert len((tmp_path / "s" / "synthetic_samples.txt").read_text().splitlines()) == 21  # a header and the 20 sequences
    refused = runner.invoke(cli, ["synthesize", "--model", str(tmp_path / "bert_text"), "--out", str(tmp_path / "t"), "--min-tokens", "30", "--max-tokens", "20"])
    one_line_error(refused, 2, "min_tokens 30 is above max_tokens 20")
