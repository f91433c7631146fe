"""Transformer surgery: whole heads and FFN neurons go, every attribute the forward reads stays
consistent, and uniform widths save as a plain Hugging Face folder."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_families import HF_CASES

from compress.context import Context
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.passes.prune import PruneConfig, prune
from compress.pruning.heads import encoder_layers


def _hf(name, tmp_path):
    cls, config = HF_CASES[name]
    torch.manual_seed(0)
    cls(config).eval().save_pretrained(tmp_path / name)
    return load(str(tmp_path / name), seq_len=16)


def _prune(model, tmp_path, **options):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return prune(model, PruneConfig(round_to=1, **options), Context(run_dir=run, teacher=model))


def test_bert_heads_and_neurons_go_and_the_attention_attributes_follow(tmp_path):
    model = _hf("bert", tmp_path)
    result = _prune(model, tmp_path, ratio=0.5)
    for layer in encoder_layers(result.model.module):
        attention = layer.module.attention.self
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 8, 16)
        assert attention.query.weight.shape == (16, 32) and layer.module.attention.output.dense.weight.shape == (32, 16)
        assert layer.module.intermediate.dense.out_features == 32 == layer.module.output.dense.in_features
    assert result.figures["heads_kept"] == 4 and result.figures["ffn_kept"] == 64
    # BERT computes head size as hidden / heads, so no config describes fewer heads: no plain folder.
    assert "hf_model" not in result.artifacts
    ids = torch.randint(5, 100, (2, 16))
    assert result.model(ids, torch.ones_like(ids)).shape == (2, 32)


def test_ffn_only_bert_saves_a_folder_automodel_loads_without_compress(tmp_path, capfd):
    model = _hf("bert", tmp_path)
    capfd.readouterr()  # the test's own save_pretrained above may draw transformers' bar
    result = _prune(model, tmp_path, head_ratio=0.0, ffn_ratio=0.5)
    assert "Writing model shards" not in capfd.readouterr().err  # stderr is compress's progress only
    folder = result.artifacts["hf_model"]
    plain = T.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    assert plain.config.intermediate_size == 32
    ids = torch.randint(5, 100, (2, 16))
    mask = torch.ones_like(ids)
    ours = result.model.module.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).last_hidden_state, ours)


def test_vit_with_fewer_heads_reloads_from_its_plain_folder(tmp_path):
    model = _hf("vit", tmp_path)
    result = _prune(model, tmp_path, ratio=0.5)
    plain = T.AutoModelForImageClassification.from_pretrained(result.artifacts["hf_model"], attn_implementation="eager").eval()
    assert (plain.config.num_attention_heads, plain.config.head_dim, plain.config.intermediate_size) == (2, 8, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, result.model(x))


def test_the_most_important_head_is_kept(tmp_path):
    model = _hf("distilbert", tmp_path)
    first = encoder_layers(model.module)[0]
    with torch.no_grad():  # head 3 of layer 0 gets large weights: l2 must keep it
        first.module.attention.q_lin.weight[24:32] *= 50
    kept = _prune(model, tmp_path, ratio=0.75).model.edits[-1]["layers"][first.name]["heads"]
    assert kept == [3]


def test_bn_scale_is_refused_for_transformers(tmp_path):
    with pytest.raises(UsageError, match="bn_scale.*no BatchNorm"):
        _prune(_hf("roberta", tmp_path), tmp_path, ratio=0.5, importance="bn_scale")
