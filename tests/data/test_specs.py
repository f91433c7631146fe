"""compress.data.specs: batches over a dataset, in order or shuffled by seed."""

from __future__ import annotations

import torch

from compress.data.specs import Dataset, LengthGrouped


def _data(n: int = 10) -> Dataset:
    return Dataset("toy", (torch.arange(n).float().unsqueeze(1),), torch.arange(n), tuple(str(i) for i in range(n)))


def test_batches_cover_every_row_once_in_order() -> None:
    batches = list(_data().batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.cat([b.labels for b in batches]).tolist() == list(range(10))
    assert batches[1].texts == ("4", "5", "6", "7")


def test_shuffled_batches_depend_on_the_seed_only() -> None:
    first = torch.cat([b.labels for b in _data().batches(3, shuffle=True, seed=1)])
    again = torch.cat([b.labels for b in _data().batches(3, shuffle=True, seed=1)])
    other = torch.cat([b.labels for b in _data().batches(3, shuffle=True, seed=2)])
    assert first.tolist() == again.tolist() and sorted(first.tolist()) == list(range(10))
    assert first.tolist() != other.tolist()
    # Inputs and labels stay paired through the shuffle.
    batch = next(_data().batches(5, shuffle=True, seed=1))
    assert batch.inputs[0].squeeze(1).long().tolist() == batch.labels.tolist()


def test_trimmed_cuts_the_padding_no_row_uses_and_keeps_left_padding() -> None:
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 6, 0, 0, 0, 0]])
    mask = (ids > 0).long()
    cut = Dataset("text", (ids, mask), None, ("a", "b"), mask_input=1).trimmed()
    assert cut.inputs[0].tolist() == [[5, 6, 7], [5, 6, 0]] and cut.inputs[1].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert cut.texts == ("a", "b") and cut.mask_input == 1
    left = Dataset("text", (ids.flip(1), mask.flip(1)), mask_input=1)
    assert left.trimmed() is left
    images = Dataset("images", (torch.zeros(2, 1, 4, 4),))
    assert images.trimmed() is images


def test_length_grouped_batches_cover_every_row_once_with_little_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 40, (200,), generator=generator)
    mask = (torch.arange(40) < lengths[:, None]).long()
    text = Dataset("text", (torch.arange(200)[:, None] * mask, mask), torch.arange(200), mask_input=1)
    grouped = LengthGrouped(text, chunk_batches=4)
    batches = list(grouped.batches(10, shuffle=True, seed=3))
    rows = torch.cat([b.labels for b in batches])
    assert sorted(rows.tolist()) == list(range(200)) and len(grouped) == 200 and grouped.name == "text"
    assert [b.labels.tolist() for b in grouped.batches(10, shuffle=True, seed=3)] == [b.labels.tolist() for b in batches]
    grouped_width = sum(b.trimmed().inputs[0].shape[1] for b in batches)
    random_width = sum(b.trimmed().inputs[0].shape[1] for b in text.batches(10, shuffle=True, seed=3))
    assert grouped_width < 0.8 * random_width, (grouped_width, random_width)
    assert all(torch.equal(b.inputs[0][:, 0], b.labels * b.inputs[1][:, 0]) for b in batches)  # rows stay whole
