"""Any model a user brings, at the CLI: outputs that are a dict, tuple, ModelOutput or scalar
(`--output` to choose), factories that raise, need arguments or return the wrong thing, Hugging
Face folders compress cannot handle, tokenizers without a pad token, and options that would be
silently ignored. Every refusal is exit 2 with one line naming the thing."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from compress.cli.main import cli
from compress.loading.checkpoint import load
from cli_checks import one_line_error


def _run(runner, tmp_path, *args):
    return runner.invoke(cli, ["run", "--out", str(tmp_path / "x"), "--json", *args, "export"])


@pytest.mark.parametrize("factory", ["dict_out", "tuple_out", "model_output"])
def test_several_outputs_export_the_logits_by_default(runner, tmp_path, factory):
    result = _run(runner, tmp_path, "--model", f"tiny_models:{factory}")
    assert result.exit_code == 0, result.stderr
    model = load(f"tiny_models:{factory}")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model(x), load("tiny_models:cnn")(x))  # the logits, not the features
    again = load(str(tmp_path / "x" / "model"))  # the saved model rebuilds with the same choice
    torch.testing.assert_close(again(x), model(x))


def test_output_chooses_by_name_or_index(runner, tmp_path):
    result = _run(runner, tmp_path, "--model", "tiny_models:dict_out", "--output", "features")
    assert result.exit_code == 0, result.stderr
    assert load(str(tmp_path / "x" / "model"))(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    assert load("tiny_models:tuple_out", output="1")(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    assert json.loads(result.stdout)["model"]["source"]["output"] == "features"


def test_one_score_per_input_becomes_a_column(runner, tmp_path):
    result = _run(runner, tmp_path, "--model", "tiny_models:score_out")
    assert result.exit_code == 0, result.stderr
    assert load("tiny_models:score_out")(torch.randn(3, 1, 8, 8)).shape == (3, 1)
    assert load(str(tmp_path / "x" / "model"))(torch.randn(3, 1, 8, 8)).shape == (3, 1)


@pytest.mark.parametrize("args, needles", [
    (["--model", "tiny_models:dict_out", "--output", "probs"], ["--output: probs", "features [1, 4], logits [1, 10]"]),
    (["--model", "tiny_models:cnn", "--output", "logits"], ["--output: logits", "returns a single tensor"]),
    (["--model", "tiny_models:scalar_out"], ["model output", "is a scalar", "[batch, ...]"]),
    (["--model", "tiny_models:text_out"], ["model output", "returns str"]),
    (["--model", "tiny_models:buggy"], ["model factory: tiny_models:buggy", "raised RuntimeError: factory bug"]),
    (["--model", "tiny_models:needs_args"], ["model factory: tiny_models:needs_args", "needs argument(s) width"]),
    (["--model", "tiny_models:returns_none"], ["model factory: tiny_models:returns_none", "returned NoneType"]),
    (["--model", "tiny_models:returns_three"], ["model factory", "tuple of 3 item(s) (TinyCNN, Tensor, str)"]),
    (["--model", "tiny_models:WORDS"], ["model factory", "cannot import it"]),
    (["--model", "tiny_models:TinyCNN"], []),  # a class with defaults builds: no error
    (["--model", "tiny_models:wrong_inputs"], ["model: tiny_models:wrong_inputs", "fails on its example inputs [1, 3, 8, 8]"]),
    (["--model", "digits", "--weights", "w.safetensors"], ["--weights: w.safetensors", "bundled model digits has its own weights"]),
    (["--model", "digits", "--input-shape", "1,3,32,32"], ["--input-shape: 1,3,32,32", "has its own example inputs"]),
    (["--model", "digits", "--output", "logits"], ["--output: logits", "bundled model digits"]),
])
def test_models_compress_cannot_take_exit_2_naming_why(runner, tmp_path, args, needles):
    result = _run(runner, tmp_path, *args)
    if not needles:
        assert result.exit_code == 2 and "input shape" in result.stderr  # TinyCNN returns no example inputs
        return
    one_line_error(result, 2, *needles)


def test_options_a_saved_folder_would_ignore_are_refused(runner, tmp_path):
    assert runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "a"), "export"]).exit_code == 0
    saved = str(tmp_path / "a" / "model")
    one_line_error(runner.invoke(cli, ["inspect", saved, "--input-shape", "1,1,16,16"]), 2, "--input-shape", "saved model")
    one_line_error(runner.invoke(cli, ["inspect", saved, "--weights", "w.pt"]), 2, "--weights", "saved model")


def _save(tmp_path, name, model):
    model.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def test_encoder_decoder_and_multimodal_folders_are_refused_naming_the_architecture(runner, tmp_path):
    torch.manual_seed(0)
    t5 = transformers.T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    folder = _save(tmp_path, "t5", transformers.T5ForConditionalGeneration(t5))
    one_line_error(runner.invoke(cli, ["inspect", folder]), 2, "T5ForConditionalGeneration is an encoder-decoder model",
                    "compress supports text models that take input_ids")
    clip = transformers.CLIPConfig(
        text_config={"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8)
    folder = _save(tmp_path, "clip", transformers.CLIPModel(clip))
    one_line_error(runner.invoke(cli, ["inspect", folder]), 2, "CLIPModel is a multimodal model (text + vision)")


def test_an_audio_model_is_refused_naming_its_input(runner, tmp_path):
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                         conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                                         num_conv_pos_embedding_groups=2)
    folder = _save(tmp_path, "w2v", transformers.Wav2Vec2Model(config))
    one_line_error(runner.invoke(cli, ["inspect", folder]), 2, "Wav2Vec2Model takes input_values")


def _gpt2_folder(tmp_path, head=transformers.GPT2LMHeadModel):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<|endoftext|>", "return", "the", "number", "of", "items", "in", "a", "container", "."]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    assert tokenizer.pad_token is None
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=32)
    folder = tmp_path / "gpt2"
    head(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizer_without_pad_token_pads_with_eos_and_says_so(runner, tmp_path):
    folder = _gpt2_folder(tmp_path)
    (tmp_path / "s.txt").write_text("return the items .\nthe number of items in a container .\n")
    result = runner.invoke(cli, ["run", "--model", str(folder), "--seq-len", "12", "--data", f"text:{tmp_path / 's.txt'}",
                                 "--out", str(tmp_path / "x"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    assert "has no pad token: padding with its eos token '<|endoftext|>'" in result.stderr
    assert json.loads(result.stdout)["summary"]["parity"]["passed"]


def test_a_decoder_classifier_without_pad_token_runs_batches(runner, tmp_path):
    """GPT-2's sequence classifier needs a pad id to find each row's last token: it gets the one
    the tokenizer pads with, so parity at batch 2 and 3 runs."""
    folder = _gpt2_folder(tmp_path, transformers.GPT2ForSequenceClassification)
    result = runner.invoke(cli, ["run", "--model", str(folder), "--seq-len", "12", "--out", str(tmp_path / "x"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["parity"]["passed"]
