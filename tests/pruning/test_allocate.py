from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import UsageError
from compress.pruning.allocate import MAX_GROUP_RATIO, kept_counts, kept_indices

WIDTHS = st.lists(st.integers(8, 96), min_size=1, max_size=6)


def _scores(widths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"g{i}": torch.rand(w, generator=g) + 0.01 for i, w in enumerate(widths)}


@settings(max_examples=60, deadline=None)
@given(widths=WIDTHS, ratio=st.floats(0.01, 0.99), round_to=st.sampled_from([1, 2, 4, 8]), allocation=st.sampled_from(["uniform", "global"]))
def test_kept_widths_are_multiples_of_round_to_and_at_least_one(widths, ratio, round_to, allocation):
    counts = kept_counts(_scores(widths), ratio, allocation, round_to, strict_round=True)
    for name, width in zip(counts, widths):
        kept = counts[name]
        assert 1 <= kept <= width
        assert kept % round_to == 0 or kept == width


@settings(max_examples=40, deadline=None)
@given(widths=WIDTHS, ratio=st.floats(0.01, 0.99))
def test_uniform_keeps_what_torch_pruning_keeps(widths, ratio):
    counts = kept_counts(_scores(widths), ratio, "uniform", 1, strict_round=True)
    assert list(counts.values()) == [max(1, int(w * (1 - ratio))) for w in widths]


def test_global_moves_pruning_to_the_weak_group_but_never_empties_it():
    scores = {"strong": torch.full((32,), 10.0) + torch.arange(32) * 0.01, "weak": torch.full((32,), 0.1) + torch.arange(32) * 0.001}
    counts = kept_counts(scores, 0.5, "global", 1, strict_round=True)
    assert counts["strong"] == 32
    assert counts["weak"] == math.ceil(32 * (1 - MAX_GROUP_RATIO))


def test_the_highest_scores_are_kept_in_order():
    kept = kept_indices({"g": torch.tensor([0.5, 3.0, 0.1, 2.0])}, {"g": 2})
    assert kept == {"g": [1, 3]}


def test_round_to_wider_than_a_group_is_refused_only_when_asked():
    scores = _scores([4, 16])
    with pytest.raises(UsageError, match="round-to.*g0's width 4"):
        kept_counts(scores, 0.5, "uniform", 8, strict_round=True)
    assert kept_counts(scores, 0.5, "uniform", 8, strict_round=False) == {"g0": 4, "g1": 8}
