"""Token masking during KD: only real, non-special tokens are masked, about the share asked,
from `fit`'s seeded random state; models without a mask token are refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from compress.data.specs import Dataset
from compress.distill.tokens import MaskedTokens
from compress.errors import UsageError

TOKENIZER = SimpleNamespace(mask_token_id=4, all_special_ids=[0, 1, 2, 4])  # pad 0, cls 1, sep 2, mask 4


class Seen(nn.Module):
    """A loss that records the batches it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Dataset] = []

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        self.batches.append(batch)
        return torch.zeros(())


def _batch(rows: int = 64, real: int = 40, width: int = 48) -> Dataset:
    ids = torch.randint(10, 100, (rows, width))
    ids[:, 0], ids[:, real - 1], ids[:, real:] = 1, 2, 0
    mask = (torch.arange(width) < real).long().expand(rows, width).clone()
    return Dataset("text:x", (ids, mask), mask_input=1)


def test_only_real_non_special_tokens_are_masked_at_about_the_share():
    seen = Seen()
    loss = MaskedTokens(seen, 0.25, ("input_ids", "attention_mask"), TOKENIZER)
    batch = _batch()
    torch.manual_seed(0)
    loss(nn.Identity(), batch)
    ids, original = seen.batches[0].inputs[0], batch.inputs[0]
    changed = ids != original
    assert torch.equal(seen.batches[0].inputs[1], batch.inputs[1])  # the attention mask is untouched
    assert (ids[changed] == 4).all()
    assert not changed[:, 0].any() and not changed[:, 39:].any()  # [CLS], [SEP] and padding stay
    share = changed.sum().item() / (64 * 38)
    assert 0.2 < share < 0.3, share


def test_masking_follows_the_seeded_random_state():
    first, second = Seen(), Seen()
    batch = _batch()
    for seen in (first, second):
        torch.manual_seed(3)
        MaskedTokens(seen, 0.15, ("input_ids", "attention_mask"), TOKENIZER)(nn.Identity(), batch)
    assert torch.equal(first.batches[0].inputs[0], second.batches[0].inputs[0])


@pytest.mark.parametrize(("names", "tokenizer"), [(("input",), TOKENIZER), (("input_ids", "attention_mask"), None),
                                                  (("input_ids",), SimpleNamespace(mask_token_id=None, all_special_ids=[]))])
def test_a_model_without_token_ids_or_mask_token_is_refused(names, tokenizer):
    with pytest.raises(UsageError, match="--token-mask.*mask token"):
        MaskedTokens(Seen(), 0.15, names, tokenizer)
