"""Hugging Face folders built here from small random configs (nothing is fetched), loaded back
through `compress.load`, exported, and compared with onnxruntime."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity
from compress.data.specs import Dataset

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "return", "the", "number", "of", "items", "in", "a", "container", "."]


def _bert_folder(tmp_path, with_tokenizer: bool = True):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(folder)
    if with_tokenizer:
        (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
        transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(folder)
    return folder


def test_text_encoder_folder_becomes_a_sentence_encoder(tmp_path):
    model = load(str(_bert_folder(tmp_path)), seq_len=16)
    assert model.task == "embedding" and model.input_names == ("input_ids", "attention_mask")
    ids, mask = model.example_inputs
    assert ids.shape == (1, 16) and mask.sum() == 11  # [CLS] + 9 words + [SEP], then padding
    out = model(*model.example_inputs)
    assert out.shape == (1, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))
    exported = export_onnx(model, tmp_path / "bert.onnx")
    data = Dataset("ex", (ids.repeat(3, 1), mask.repeat(3, 1)))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed


def test_text_folder_without_tokenizer_gets_random_ids(tmp_path):
    model = load(str(_bert_folder(tmp_path, with_tokenizer=False)), seq_len=8)
    assert model.tokenizer is None and model.example_inputs[0].shape == (1, 8)


def test_image_classifier_folder_exports_logits(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    model = load(str(tmp_path / "vit"))
    assert model.task == "classification" and model.input_names == ("pixel_values",)
    assert model(*model.example_inputs).shape == (1, 5)
    exported = export_onnx(model, tmp_path / "vit.onnx")
    data = Dataset("random", (torch.randn(4, 3, 16, 16),))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed


def test_broken_folder_is_usage_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="model folder"):
        load(str(tmp_path / "bad"))


def test_resnet_config_without_image_size_uses_224_or_the_given_shape(tmp_path):
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path / "resnet")
    assert load(str(tmp_path / "resnet")).example_inputs[0].shape == (1, 3, 224, 224)
    model = load(str(tmp_path / "resnet"), input_shapes=((1, 3, 64, 64),))
    assert model(*model.example_inputs).shape == (1, 3)
    exported = export_onnx(model, tmp_path / "resnet.onnx")
    data = Dataset("random", (torch.randn(2, 3, 64, 64),))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed


def test_run_on_a_hugging_face_folder_from_the_cli(runner, tmp_path):
    from compress.cli.main import cli

    folder = _bert_folder(tmp_path)
    (tmp_path / "s.txt").write_text("Return the number of items.\nThe items in a container.\nA number of the items.\n")
    result = runner.invoke(cli, ["run", "--model", str(folder), "--seq-len", "16", "--data", f"text:{tmp_path / 's.txt'}",
                                 "--out", str(tmp_path / "run"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["quality_metric"] == "cosine_mean" and summary["quality_drop_torch"] == 0.0
    assert summary["quality_measured_on"] == "onnx" and abs(summary["quality_drop"]) < 1e-6  # float32 rounding in onnxruntime
    assert report["summary"]["parity"]["passed"]


def test_a_saved_model_is_self_contained_after_the_original_folder_is_gone(tmp_path):
    import shutil

    from compress.model import save

    folder = _bert_folder(tmp_path)
    model = load(str(folder), seq_len=16)
    with torch.no_grad():
        model.module.encoder.pooler.dense.bias.add_(1.0)  # weights that differ from the folder's
        model.module.encoder.embeddings.word_embeddings.weight.mul_(2.0)
    save(model, tmp_path / "saved")
    copied = sorted(p.name for p in (tmp_path / "saved" / "hf").iterdir())
    assert copied == sorted(p.name for p in folder.iterdir() if p.suffix == ".json")  # config + tokenizer, no weights
    shutil.rmtree(folder)
    again = load(str(tmp_path / "saved"))
    assert again.tokenizer is not None and torch.equal(again.example_inputs[0], model.example_inputs[0])
    torch.testing.assert_close(again(*model.example_inputs), model(*model.example_inputs), rtol=0, atol=0)
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "saved", moved)
    torch.testing.assert_close(load(str(moved))(*model.example_inputs), model(*model.example_inputs), rtol=0, atol=0)


def test_without_a_length_a_text_model_runs_at_its_own(tmp_path):
    """One sequence length, Source.seq_len: 128, or the model's longest input when shorter."""
    model = load(str(_bert_folder(tmp_path)))  # max_position_embeddings 64
    assert model.source.seq_len == 64 and model.example_inputs[0].shape == (1, 64)
    assert load(str(_bert_folder(tmp_path)), seq_len=16).source.seq_len == 16
