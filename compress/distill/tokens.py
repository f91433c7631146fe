"""Token masking of text inputs during KD: each step, a random share of each sentence's real
tokens (not padding, not [CLS]/[SEP]-like special tokens) is replaced by the tokenizer's mask
token, and the teacher labels the masked sentence (TinyBERT's data augmentation, Jiao et al. 2020,
section 3.4, reduced to its masking half: no word replacement from a second model). A small corpus
then gives new inputs every epoch, near the text it came from.

`MaskedTokens` wraps a `fit` loss, so masking happens inside the one training loop with the random
state `fit` seeds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.errors import UsageError

TOKEN_IDS = "input_ids"


class MaskedTokens(nn.Module):
    """A `fit` loss whose batches have `share` of their real tokens masked first. A module, so the
    inner loss's own parameters (KD projections) stay visible to `fit`."""

    def __init__(self, loss: nn.Module, share: float, input_names: tuple[str, ...], tokenizer: Any) -> None:
        super().__init__()
        if TOKEN_IDS not in input_names or tokenizer is None or getattr(tokenizer, "mask_token_id", None) is None:
            raise UsageError("distill --token-mask", share, "needs a text model whose tokenizer has a mask token; give --token-mask 0 for this model")
        self.loss, self.share = loss, share
        self.ids_index = input_names.index(TOKEN_IDS)
        self.mask_id = int(tokenizer.mask_token_id)
        self.register_buffer("special_ids", torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long), persistent=False)

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        inputs = list(batch.inputs)
        ids = inputs[self.ids_index]
        maskable = ~torch.isin(ids, self.special_ids.to(ids.device))
        if batch.mask_input is not None:
            maskable &= inputs[batch.mask_input] != 0
        chosen = maskable & (torch.rand(ids.shape, device=ids.device) < self.share)
        inputs[self.ids_index] = torch.where(chosen, torch.full_like(ids, self.mask_id), ids)
        return self.loss(student, replace(batch, inputs=tuple(inputs)))
