from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.metrics import accuracy, cosine, mac_count, neighbour_recall, param_count, quality, state_bytes, top1_agreement


def test_costs_of_a_linear_layer():
    layer = nn.Linear(16, 4)
    assert param_count(layer) == 16 * 4 + 4
    assert state_bytes(layer) == (16 * 4 + 4) * 4
    assert mac_count(layer, (torch.randn(3, 16),)) == 3 * 16 * 4


def test_mac_count_of_a_conv():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    assert mac_count(conv, (torch.randn(1, 2, 5, 5),)) == 5 * 5 * 3 * 2 * 9


def test_accuracy_and_agreement():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == 2 / 3
    assert top1_agreement(logits, logits * 2) == 1.0
    assert top1_agreement(logits, -logits) == 0.0


def test_neighbour_recall_is_one_for_identical_and_drops_for_noise():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 8, generator=g)
    assert neighbour_recall(emb, emb, k=10) == (1.0, 1.0)
    noisy = emb + 3 * torch.randn(50, 8, generator=g)
    recall, agree = neighbour_recall(noisy, emb, k=10)
    assert recall < 0.7 and agree < 1.0


def test_quality_for_each_task():
    emb = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    figures = quality("embedding", emb, emb, None)
    assert abs(figures["cosine_mean"] - 1) < 1e-9 and abs(figures["cosine_min"] - 1) < 1e-9
    assert figures["recall_at_10"] == 1.0
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(2))
    labels = logits.argmax(1)
    assert quality("classification", logits, logits, labels)["accuracy"] == 1.0
    assert cosine(logits, -logits).max().item() < -0.999


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), dim=st.integers(2, 8), seed=st.integers(0, 10_000), k=st.integers(1, 12))
def test_neighbour_recall_is_a_share(n, dim, seed, k):
    g = torch.Generator().manual_seed(seed)
    recall, agree = neighbour_recall(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g), k=k)
    assert 0.0 <= recall <= 1.0 and 0.0 <= agree <= 1.0
