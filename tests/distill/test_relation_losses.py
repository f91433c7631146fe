"""MiniLM attention / value-relation KL, attention-output MSE and RKD: each against a reference
computed by hand (plain Python loops) on small tensors, then inside KDLoss on tiny real
Transformers (a student with fewer heads included) and through `distill` with each weight."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from compress.context import Context
from compress.data.specs import Dataset
from compress.distill.losses import (
    KDLoss, KDWeights, pairwise_distances, relation_kl, relation_log_probs, relation_logits, rkd_angle, rkd_distance,
)
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.pipeline import run
from compress.recipe import make_step
from tiny_families import saved_family


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _maps(left: torch.Tensor, right: torch.Tensor, heads: int, mask: list[list[int]]) -> list:
    """maps[b][h][i] = softmax over the real keys j of <left_h[b, i], right_h[b, j]> / sqrt(d_h)."""
    batch, tokens, width = left.shape
    size = width // heads
    maps = []
    for b in range(batch):
        per_head = []
        for h in range(heads):
            cols = range(h * size, (h + 1) * size)
            rows = []
            for i in range(tokens):
                scores = [sum(left[b, i, c].item() * right[b, j, c].item() for c in cols) / math.sqrt(size) for j in range(tokens)]
                real = [j for j in range(tokens) if mask[b][j]]
                probs = _softmax([scores[j] for j in real])
                full = [0.0] * tokens
                for j, p in zip(real, probs):
                    full[j] = p
                rows.append(full)
            per_head.append(rows)
        maps.append(per_head)
    return maps


def _kl(teacher_maps: list, student_maps: list, mask: list[list[int]]) -> float:
    """Mean over heads and real query positions of sum_j t log(t / s)."""
    total, count = 0.0, 0
    for b, (t_heads, s_heads) in enumerate(zip(teacher_maps, student_maps)):
        for t_rows, s_rows in zip(t_heads, s_heads):
            for i, (t_row, s_row) in enumerate(zip(t_rows, s_rows)):
                if mask[b][i]:
                    total += sum(t * math.log(t / s) for t, s in zip(t_row, s_row) if t > 0)
                    count += 1
    return total / count


MASK = [[1, 1, 1, 0], [1, 1, 0, 0]]


def _relation_kl(student_parts, teacher_parts, s_heads, t_heads, average=False):
    mask = torch.tensor(MASK)
    s = relation_log_probs(relation_logits(*student_parts, s_heads), mask, average)
    t = relation_log_probs(relation_logits(*teacher_parts, t_heads), mask, average)
    return relation_kl(s, t, mask).item()


def test_attention_kl_per_head_matches_the_hand_computed_minilm_loss():
    sq, sk, tq, tk = (_rand(2, 4, 6, seed=i) for i in range(4))
    expected = _kl(_maps(tq, tk, 2, MASK), _maps(sq, sk, 2, MASK), MASK)
    assert _relation_kl((sq, sk), (tq, tk), 2, 2) == pytest.approx(expected, rel=1e-5)
    assert _relation_kl((tq, tk), (tq, tk), 2, 2) == pytest.approx(0.0, abs=1e-6)


def test_value_relation_is_the_kl_of_value_self_relations():
    sv, tv = _rand(2, 4, 6, seed=5), _rand(2, 4, 6, seed=6)
    expected = _kl(_maps(tv, tv, 3, MASK), _maps(sv, sv, 3, MASK), MASK)
    assert _relation_kl((sv, sv), (tv, tv), 3, 3) == pytest.approx(expected, rel=1e-5)


def test_fewer_student_heads_compare_head_averaged_maps():
    sq, sk = _rand(2, 4, 4, seed=1), _rand(2, 4, 4, seed=2)  # 2 heads of 2
    tq, tk = _rand(2, 4, 6, seed=3), _rand(2, 4, 6, seed=4)  # 3 heads of 2

    def averaged(maps):
        return [[[[sum(maps[b][h][i][j] for h in range(len(maps[b]))) / len(maps[b]) for j in range(4)] for i in range(4)]]
                for b in range(2)]

    expected = _kl(averaged(_maps(tq, tk, 3, MASK)), averaged(_maps(sq, sk, 2, MASK)), MASK)
    assert _relation_kl((sq, sk), (tq, tk), 2, 3, average=True) == pytest.approx(expected, rel=1e-5)


def test_relation_heads_resplit_any_width_into_as_many_maps():
    sq, sk = _rand(2, 4, 4, seed=1), _rand(2, 4, 4, seed=2)  # width 4 (e.g. 2 heads of 2)
    tq, tk = _rand(2, 4, 8, seed=3), _rand(2, 4, 8, seed=4)  # width 8 (4 heads of 2)
    assert relation_logits(sq, sk, 2).shape == relation_logits(tq, tk, 2).shape == (2, 2, 4, 4)
    expected = _kl(_maps(tq, tk, 2, MASK), _maps(sq, sk, 2, MASK), MASK)  # 2 relation heads of 4 and of 2
    assert _relation_kl((sq, sk), (tq, tk), 2, 2) == pytest.approx(expected, rel=1e-5)


def test_padded_positions_change_nothing_and_stay_finite():
    sq, sk, tq, tk = (_rand(2, 4, 6, seed=i).requires_grad_(i < 2) for i in range(4))
    mask = torch.tensor(MASK)
    loss = relation_kl(relation_log_probs(relation_logits(sq, sk, 2), mask), relation_log_probs(relation_logits(tq, tk, 2), mask), mask)
    loss.backward()
    assert torch.isfinite(sq.grad).all() and sq.grad[1, 2:].abs().max() == 0  # padded queries get no gradient
    noisy_q = sq.detach().clone()
    noisy_q[1, 2:] += 100.0  # whatever sits at padded positions
    again = relation_kl(relation_log_probs(relation_logits(noisy_q, sk.detach(), 2), mask), relation_log_probs(relation_logits(tq, tk, 2), mask), mask)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


def test_rkd_distance_matches_the_hand_computed_loss():
    student, teacher = _rand(4, 3, seed=1), _rand(4, 5, seed=2)

    def normalised(x):
        d = [[math.dist(x[i].tolist(), x[j].tolist()) for j in range(4)] for i in range(4)]
        mean = sum(d[i][j] for i in range(4) for j in range(4) if i != j) / 12
        return [[v / mean for v in row] for row in d]

    def huber(a, b):
        diff = abs(a - b)
        return 0.5 * diff * diff if diff < 1 else diff - 0.5

    s, t = normalised(student), normalised(teacher)
    expected = sum(huber(s[i][j], t[i][j]) for i in range(4) for j in range(4)) / 16
    assert rkd_distance(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert rkd_distance(teacher * 3, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert pairwise_distances(student).diagonal().abs().max() == 0


def test_rkd_angle_matches_the_hand_computed_loss():
    student, teacher = _rand(4, 3, seed=3), _rand(4, 5, seed=4)

    def cosines(x):
        out = {}
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    a, b = x[j] - x[i], x[k] - x[i]
                    na, nb = a.norm().item(), b.norm().item()
                    out[i, j, k] = 0.0 if na == 0 or nb == 0 else (a @ b).item() / (na * nb)
        return out

    s, t = cosines(student), cosines(teacher)
    diffs = [abs(s[key] - t[key]) for key in s]
    expected = sum(0.5 * d * d if d < 1 else d - 0.5 for d in diffs) / 64
    assert rkd_angle(student, teacher).item() == pytest.approx(expected, rel=1e-4)
    assert rkd_angle(teacher * 2 + 1, teacher).item() == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return saved_family("bert", tmp_path_factory.mktemp("families"))


def _pruned_heads(model, ratio=0.5):
    from compress.passes.prune import PruneConfig, prune

    return prune(model, PruneConfig(head_ratio=ratio, ffn_ratio=0.25), Context(run_dir=Path("."), teacher=model)).model


ATTENTION_WEIGHTS = ("attention", "value_relation", "attention_output")


@pytest.mark.parametrize("name", ATTENTION_WEIGHTS)
def test_attention_terms_are_zero_for_the_teacher_itself_and_train_a_pruned_student(tiny_bert, name):
    model, data = tiny_bert
    weights = KDWeights(kl=0.0, **{name: 1.0})
    batch = Dataset("ids", data.inputs, mask_input=1)
    itself = KDLoss(model.module, model.copy().module, task="embedding", weights=weights, example_inputs=model.example_inputs)
    assert itself(model.copy().module, batch).item() == pytest.approx(0.0, abs=1e-6)
    student = _pruned_heads(model)  # 2 of 4 heads: head-averaged maps
    loss = KDLoss(model.module, student.module, task="embedding", weights=weights, example_inputs=model.example_inputs)
    value = loss(student.module, batch)
    value.backward()
    first_value = student.module.encoder.encoder.layer[0].attention.self.value.weight  # every term reaches it
    assert value.item() > 0 and torch.isfinite(first_value.grad).all() and first_value.grad.abs().sum() > 0


def test_relation_heads_must_divide_the_widths_and_layers_can_be_mapped(tiny_bert):
    model, data = tiny_bert
    student = _pruned_heads(model)  # query width 16 (2 heads of 8); the teacher's 32
    weights = KDWeights(kl=0.0, attention=1.0)
    with pytest.raises(UsageError, match="relation-heads"):
        KDLoss(model.module, student.module, task="embedding", weights=weights, relation_heads=3, example_inputs=model.example_inputs)
    mapped = KDLoss(model.module, student.module, task="embedding", weights=weights, relation_heads=4,
                    relation_layers="map", example_inputs=model.example_inputs)
    assert mapped.attention_pairs == ((0, 0), (1, 1))
    assert mapped(student.module, Dataset("ids", data.inputs, mask_input=1)).item() > 0


def test_attention_terms_refuse_a_model_without_attention_layers():
    cnn = load("tiny_models:cnn")
    with pytest.raises(UsageError, match="attention distillation.*known layout"):
        KDLoss(cnn.module, cnn.copy().module, task="classification", weights=KDWeights(attention=1.0), example_inputs=cnn.example_inputs)


@pytest.mark.parametrize("name", [*ATTENTION_WEIGHTS, "rkd_distance", "rkd_angle"])
def test_distill_runs_with_each_weight_on_a_tiny_transformer(tmp_path, tiny_bert, name):
    model, _ = tiny_bert
    ctx = Context(run_dir=tmp_path, teacher=model.copy())
    steps = [make_step("prune", {"head_ratio": 0.5}), make_step("synthesize", {"sequences": 64, "text_method": "random"}),
             make_step("distill", {"steps": 4, "kl": 0.0, name: 1.0, "eval_every": 0, "relation_layers": "map"})]
    record = run(model, steps, ctx)
    figures = record.steps[-1].figures
    assert figures["steps"] == 4 and math.isfinite(figures["loss_end"]) and figures["loss_start"] > 0
