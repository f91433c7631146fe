"""Padded text runs sorted by length and cut to each batch's longest real sequence, in torch and
in onnxruntime; the outputs are those of the whole padded batch, in the data's order."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny_families import TEXT

from compress.data.specs import Dataset
from compress.loading.hf import SentenceEncoder
from compress.model import Model, Source
from compress.onnx.export import export_onnx
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs

WIDTH = 40


@pytest.fixture(scope="module")
def encoder() -> Model:
    torch.manual_seed(0)
    module = SentenceEncoder(T.BertModel(T.BertConfig(**TEXT, attn_implementation="eager"))).eval()
    ids = torch.randint(5, 100, (1, WIDTH))
    return Model(module, (ids, torch.ones_like(ids)), ("input_ids", "attention_mask"), "embedding",
                 Source("hf", "tiny-bert", seq_len=WIDTH), name="tiny-bert")


def _padded_text(rows: int = 23, seed: int = 1) -> Dataset:
    """Right-padded rows of random real lengths 1..25 in a [rows, 40] batch: over a third is padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 26, (rows,), generator=g)
    mask = (torch.arange(WIDTH) < lengths[:, None]).long()
    ids = torch.randint(5, 100, (rows, WIDTH), generator=g) * mask
    return Dataset("padded text", (ids, mask), texts=tuple(f"s{i}" for i in range(rows)), mask_input=1)


def test_batches_are_sorted_by_length_and_cut_to_the_longest_real_sequence():
    data = _padded_text()
    ends = data.inputs[1].sum(dim=1)
    seen = []
    for index, (ids, mask) in data.padded_batches(8):
        assert ids.shape == mask.shape == (len(index), int(ends[index].max()))
        assert (mask.sum(dim=1) == ends[index]).all()  # no real token was cut
        seen += index.tolist()
    assert sorted(seen) == list(range(len(data)))
    assert [int(ends[i]) for i in seen] == sorted(ends.tolist(), reverse=True)
    # Data without a mask comes in order, uncut.
    plain = Dataset("images", (torch.randn(5, 3),))
    assert [i.tolist() for i, _ in plain.padded_batches(2)] == [[0, 1], [2, 3], [4]]


def test_left_padded_text_is_not_cut():
    data = _padded_text()
    ids, mask = (x.flip(1) for x in data.inputs)
    left = Dataset("left padded", (ids, mask), mask_input=1)
    for _, (batch_ids, _) in left.padded_batches(8):
        assert batch_ids.shape[1] == WIDTH


def test_torch_outputs_equal_the_untrimmed_forward_in_data_order(encoder):
    data = _padded_text()
    with torch.no_grad():
        untrimmed = encoder.module(*data.inputs)
    trimmed = torch_outputs(encoder, data, batch_size=8)
    assert trimmed.shape == untrimmed.shape
    assert (trimmed - untrimmed).abs().max().item() <= 1e-6
    # shuffled rows give shuffled outputs: the order is the data's, not the sorted one
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(2))
    assert (torch_outputs(encoder, data.take(order), batch_size=8) - untrimmed[order]).abs().max().item() <= 1e-6


def test_onnx_outputs_equal_the_untrimmed_run_in_data_order(encoder, tmp_path):
    path = export_onnx(encoder, tmp_path / "tiny_bert.onnx").path
    session = open_session(path)
    data = _padded_text()
    untrimmed = torch.from_numpy(session.run(None, {"input_ids": data.inputs[0].numpy(), "attention_mask": data.inputs[1].numpy()})[0])
    trimmed = onnx_outputs(session, data, batch_size=8)
    assert (trimmed - untrimmed).abs().max().item() <= 1e-6
