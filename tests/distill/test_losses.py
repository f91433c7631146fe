from __future__ import annotations

import math

import pytest
import torch
import transformers
from torch import nn

from compress.data.specs import Dataset
from compress.distill.layers import captured_outputs, transformer_layers, uniform_layer_map
from compress.distill.losses import KDLoss, KDWeights, embedding_distance, hidden_mse, logit_kl
from compress.errors import UsageError
from compress.loading.hf import SentenceEncoder
from tiny_models import seeded_cnn


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_logit_kl_matches_the_hand_computed_hinton_loss():
    student, teacher, t = _rand(3, 5, seed=1), _rand(3, 5, seed=2), 4.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p_s = [math.exp(v / t) for v in s_row]
        p_t = [math.exp(v / t) for v in t_row]
        p_s = [v / sum(p_s) for v in p_s]
        p_t = [v / sum(p_t) for v in p_t]
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = expected / 3 * t * t
    assert logit_kl(student, teacher, t).item() == pytest.approx(expected, rel=1e-5)
    assert logit_kl(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_embedding_distance_is_one_minus_cosine():
    student, teacher = _rand(4, 8, seed=1), _rand(4, 8, seed=2)
    cosines = [(s @ t / (s.norm() * t.norm())).item() for s, t in zip(student, teacher)]
    assert embedding_distance(student, teacher).item() == pytest.approx(1 - sum(cosines) / 4, rel=1e-5)
    assert embedding_distance(teacher * 3, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_mse_averages_real_tokens_and_layers():
    s1, t1, s2, t2 = (_rand(2, 3, 4, seed=i) for i in range(4))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    identity = [nn.Identity(), nn.Identity()]

    def layer(s, t):
        squared = [((s[b, i] - t[b, i]) ** 2).mean().item() for b in range(2) for i in range(3) if mask[b, i]]
        return sum(squared) / len(squared)

    expected = (layer(s1, t1) + layer(s2, t2)) / 2
    assert hidden_mse([s1, s2], [t1, t2], identity, mask).item() == pytest.approx(expected, rel=1e-5)
    assert hidden_mse([s1], [t1], [nn.Identity()]).item() == pytest.approx(((s1 - t1) ** 2).mean().item(), rel=1e-5)


def test_hidden_mse_projects_the_student_width():
    project = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        project.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]]))
    student = _rand(1, 3, 2, seed=5)
    teacher = torch.cat([student, student.sum(-1, keepdim=True), torch.zeros(1, 3, 1)], dim=-1)
    assert hidden_mse([student], [teacher], [project]).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("student, teacher, pairs", [
    (6, 6, ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5))),
    (3, 6, ((0, 1), (1, 3), (2, 5))),
    (4, 12, ((0, 2), (1, 5), (2, 8), (3, 11))),
])
def test_uniform_layer_map_follows_tinybert(student, teacher, pairs):
    assert uniform_layer_map(student, teacher) == pairs


def _tiny_bert(hidden: int = 16, layers: int = 2, seed: int = 0) -> SentenceEncoder:
    config = transformers.BertConfig(vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=2 * hidden, max_position_embeddings=32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SentenceEncoder(transformers.BertModel(config)).eval()


def _text_batch(rows: int = 4, length: int = 6) -> Dataset:
    ids = torch.randint(1, 60, (rows, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    return Dataset("text", (ids, mask), mask_input=1)


def test_transformer_layers_are_the_encoder_blocks():
    bert = _tiny_bert(layers=3)
    assert transformer_layers(bert) == list(bert.encoder.encoder.layer)
    assert transformer_layers(seeded_cnn()) == []


def test_captured_outputs_reads_each_layer_and_leaves_no_hook():
    bert = _tiny_bert()
    layers = transformer_layers(bert)
    batch = _text_batch()
    with captured_outputs(layers) as states:
        bert(*batch.inputs)
    assert [s.shape for s in states] == [torch.Size([4, 6, 16])] * 2
    assert all(not layer._forward_hooks for layer in layers)
    full = bert.encoder(input_ids=batch.inputs[0], attention_mask=batch.inputs[1], output_hidden_states=True)
    torch.testing.assert_close(states[-1], full.hidden_states[-1])


def test_kd_loss_maps_layers_and_learns_a_projection_where_widths_differ():
    teacher, student = _tiny_bert(hidden=16, layers=4), _tiny_bert(hidden=8, layers=2, seed=1)
    batch = _text_batch()
    # Different widths: only the hidden term applies (the output term needs equal output widths).
    loss = KDLoss(teacher, student, task="embedding", weights=KDWeights(kl=0.0, hidden=1.0), example_inputs=batch.inputs)
    assert loss.layer_pairs == ((0, 1), (1, 3))
    assert [tuple(p.weight.shape) for p in loss.projections] == [(16, 8), (16, 8)]
    assert all(id(p) not in {id(q) for q in teacher.parameters()} for p in loss.parameters())  # the teacher is not trained
    student.train()
    value = loss(student, batch)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert loss.projections[0].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_kd_loss_of_a_copy_against_its_teacher_is_zero():
    teacher = _tiny_bert()
    loss = KDLoss(teacher, _tiny_bert(), task="embedding", weights=KDWeights(kl=1.0, hidden=1.0), example_inputs=_text_batch().inputs)
    assert [type(p) for p in loss.projections] == [nn.Identity, nn.Identity]
    assert loss(_tiny_bert().eval(), _text_batch()).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_adds_cross_entropy_only_where_there_are_labels():
    teacher, student = seeded_cnn(0), seeded_cnn(1)
    x = _rand(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    loss = KDLoss(teacher, student, task="classification", weights=KDWeights(kl=0.5, ce=2.0), temperature=2.0)
    student.eval()
    expected = 0.5 * logit_kl(student(x), teacher(x), 2.0) + 2.0 * nn.functional.cross_entropy(student(x), labels)
    assert loss(student, Dataset("d", (x,), labels)).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss(student, Dataset("d", (x,))).item() == pytest.approx(0.5 * logit_kl(student(x), teacher(x), 2.0).item(), rel=1e-5)


def test_hidden_distillation_on_a_cnn_is_refused():
    with pytest.raises(UsageError, match="hidden-state distillation: TinyCNN: needs a Transformer encoder"):
        KDLoss(seeded_cnn(), seeded_cnn(1), task="classification", weights=KDWeights(hidden=1.0), example_inputs=(_rand(1, 1, 8, 8),))
