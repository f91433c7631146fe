"""Synthetic token sequences for text encoders: what they are made of, their lengths and padding,
the Zipf draw over the vocabulary order, the teacher-guided diverse choice, and the set on disk
(reused for the same teacher and settings, refused for another teacher)."""

from __future__ import annotations

import pytest
import torch

from compress.context import Context
from compress.distill.settings import TextSynthesisSettings
from compress.distill.synthetic_set import read_set
from compress.distill.text_synthesis import Vocabulary, draw_sequences, farthest_point_rows, make_text_set
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.pipeline import run
from compress.recipe import make_step
from tiny_families import TINY_VOCAB, saved_family, saved_text_family


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return saved_text_family(tmp_path_factory.mktemp("text"))[0]


def test_the_vocabulary_keeps_ordinary_tokens_in_rank_order(text_model):
    vocab = Vocabulary.of(text_model)
    tokens = [TINY_VOCAB[i] for i in vocab.ordinary.tolist()]
    assert tokens[:3] == ["the", "of", "and"]  # specials, [unused0] and single characters left out
    assert not {"[PAD]", "[unused0]", "[CLS]", ".", "a"} & set(tokens) and "##ing" in tokens
    assert vocab.prefix == (TINY_VOCAB.index("[CLS]"),) and vocab.suffix == (TINY_VOCAB.index("[SEP]"),) and vocab.pad == 0


def test_a_model_without_a_tokenizer_draws_from_its_embedding_table(tmp_path):
    model, _ = saved_family("bert", tmp_path)
    vocab = Vocabulary.of(model)
    assert torch.equal(vocab.ordinary, torch.arange(100)) and vocab.prefix == vocab.suffix == ()


def test_sequences_have_their_lengths_special_tokens_and_padding(text_model):
    vocab = Vocabulary.of(text_model)
    settings = TextSynthesisSettings(min_tokens=5, max_tokens=12)
    ids, mask = draw_sequences(vocab, 200, settings, 16, torch.Generator().manual_seed(0), "zipf")
    lengths = mask.sum(1)
    assert ids.shape == mask.shape == (200, 16) and int(lengths.min()) == 5 and int(lengths.max()) == 12
    assert (ids[:, 0] == vocab.prefix[0]).all() and (ids[torch.arange(200), lengths - 1] == vocab.suffix[0]).all()
    assert (ids[mask == 0] == vocab.pad).all() and (mask[:, :-1] >= mask[:, 1:]).all()  # padding only at the end
    body = torch.cat([ids[i, 1 : lengths[i] - 1] for i in range(200)])
    assert torch.isin(body, vocab.ordinary).all()


def test_vocab_rank_follows_zipf_and_random_is_flat(text_model):
    vocab = Vocabulary.of(text_model)
    settings = TextSynthesisSettings(min_tokens=16, max_tokens=16)

    def counts(kind):
        ids, mask = draw_sequences(vocab, 2000, settings, 16, torch.Generator().manual_seed(1), kind)
        body = ids[:, 1:15].flatten()
        return torch.stack([(body == token).sum() for token in vocab.ordinary]).double() / body.numel()

    zipf, uniform = counts("zipf"), counts("uniform")
    harmonic = sum(1 / r for r in range(1, len(vocab.ordinary) + 1))
    assert zipf[0].item() == pytest.approx(1 / harmonic, rel=0.05)  # rank 1: 1 / H_n
    assert zipf[1].item() == pytest.approx(1 / (2 * harmonic), rel=0.08)
    assert uniform.max() / uniform.min() < 1.5 and zipf[0] / zipf[-1] > 40


def test_too_short_a_length_for_the_special_tokens_is_refused(text_model):
    settings = TextSynthesisSettings(min_tokens=1, max_tokens=2)
    with pytest.raises(UsageError, match="max_tokens"):
        draw_sequences(Vocabulary.of(text_model), 4, settings, 16, torch.Generator(), "zipf")


def test_farthest_point_selection_spreads_over_the_directions():
    # Eight directions on a circle, each repeated with a tiny jitter: four picks take four far-apart ones.
    angles = torch.arange(8).repeat(4) * (torch.pi / 4) + torch.linspace(0, 0.01, 32)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    chosen = farthest_point_rows(points, 4)
    assert len(set(chosen.tolist())) == 4
    unit = points[chosen]
    similarity = unit @ unit.T - 2 * torch.eye(4)
    assert similarity.max() < 0.05  # no two picks within 87 degrees of each other


def test_the_diverse_set_is_more_diverse_to_the_teacher(tmp_path, text_model):
    figures = {}
    for method in ("vocab-rank", "diverse"):
        made = make_text_set(text_model, TextSynthesisSettings(sequences=32, text_method=method), tmp_path / method, seed=0)
        figures[method] = made.figures
    assert figures["diverse"]["teacher_output_cosine_mean"] < figures["vocab-rank"]["teacher_output_cosine_mean"]


def test_the_set_round_trips_comes_from_the_cache_and_is_refused_for_another_teacher(tmp_path, text_model):
    settings = TextSynthesisSettings(sequences=16, text_method="random")
    first = make_text_set(text_model, settings, tmp_path / "a", seed=3)
    again = make_text_set(text_model, settings, tmp_path / "b", seed=3)
    assert first.figures["reused"] is False and again.figures["reused"] is True
    assert torch.equal(first.inputs[0], again.inputs[0]) and first.inputs[0].dtype == torch.long
    on_disk = read_set(tmp_path / "a" / "synthetic.safetensors")
    assert on_disk.input_names == ("input_ids", "attention_mask") and on_disk.targets is None
    assert on_disk.settings == settings.model_dump() and on_disk.seed == 3
    assert torch.equal(on_disk.inputs[1], first.inputs[1])
    assert "the first 16" in (tmp_path / "a" / "synthetic_samples.txt").read_text()
    other = text_model.copy()
    with torch.no_grad():
        next(other.module.parameters()).add_(1.0)
    with pytest.raises(UsageError, match="hash mismatch"):
        make_text_set(other, settings, tmp_path / "c", set_file=str(tmp_path / "a" / "synthetic.safetensors"))


def test_the_pass_gives_padded_token_sequences_to_later_steps(tmp_path, text_model):
    ctx = Context(run_dir=tmp_path, teacher=text_model.copy())
    record = run(text_model, [make_step("synthesize", {"sequences": 12, "max_tokens": 10})], ctx)
    synthetic = ctx.source("synthetic", "test")
    assert len(synthetic) == 12 and synthetic.mask_input == 1
    assert synthetic.inputs[0].shape == (12, 16) and next(synthetic.batches(12)).trimmed().inputs[0].shape[1] <= 10
    assert record.steps[0].figures["sequences"] == 12 and ctx.artifacts["synthetic_samples"].name == "synthetic_samples.txt"


def test_a_model_neither_batchnorm_nor_text_is_refused_proposing_real_data(tmp_path):
    model = load("tiny_models:cnn_without_bn")
    with pytest.raises(UsageError, match="not a text encoder.*real data"):
        run(model, [make_step("synthesize", {})], Context(run_dir=tmp_path, teacher=model.copy()))
