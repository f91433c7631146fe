"""Embedding tables stored int8 with a scale per row: the ONNX rewrite changes storage only (a
table on its grid computes what it did; any other table stays float), and the torch rounding is
the same grid."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.onnx.session import open_session
from compress.quant.embeddings import MIN_VALUES, int8_tables, on_grid, row_quantize
from compress.quant.fake import TableQuant, row_quantized
from compress.quant.ort import rewrite_int8


def rewrite_file(path):
    """The tables `rewrite_int8` stored int8 in the file at `path` (qat's rule: tables on their grid)."""
    return rewrite_int8(path, round_tables=False)[1]


def _on_grid(rows: int, width: int, seed: int) -> np.ndarray:
    table = np.random.default_rng(seed).normal(0, 0.1, (rows, width)).astype(np.float32)
    table[3] = 0  # an all-zero row (a padding token's) keeps scale 1
    quantized, scales = row_quantize(table)
    return quantized.astype(np.float32) * scales


def _graph(tmp_path, tables: dict[str, np.ndarray], tied: str | None = None):
    """ids [batch, tokens] -> one Gather per table, each a graph output; `tied` is also read by a
    Transpose (as a decoder tied to its input embedding reads the table)."""
    nodes, outputs = [], []
    for name, table in tables.items():
        nodes.append(helper.make_node("Gather", [name, "ids"], [f"{name}_rows"], name=f"gather_{name}"))
        outputs.append(helper.make_tensor_value_info(f"{name}_rows", TensorProto.FLOAT, None))
    if tied:
        nodes.append(helper.make_node("Transpose", [tied], ["decoder"]))
        outputs.append(helper.make_tensor_value_info("decoder", TensorProto.FLOAT, None))
    initializers = [numpy_helper.from_array(t, n) for n, t in tables.items()]
    graph = helper.make_graph(nodes, "tables", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])], outputs, initializers)
    path = tmp_path / "tables.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path, ids: np.ndarray) -> list[np.ndarray]:
    return open_session(path).run(None, {"ids": ids})


def test_only_large_tables_on_their_grid_and_read_by_gathers_alone_are_stored_int8(tmp_path):
    tables = {
        "word": _on_grid(2048, 32, 0),  # 65,536 values on their grid: stored int8
        "small": _on_grid(2048, 4, 1),  # on the grid, but too small (8,192 values) to pay for its nodes
        "off_grid": np.random.default_rng(2).normal(0, 0.1, (2048, 32)).astype(np.float32),  # float values: stays float
    }
    assert tables["word"].size == MIN_VALUES
    path = _graph(tmp_path, tables)
    ids = np.random.default_rng(3).integers(0, 2, (2, 7)).astype(np.int64)
    ids[0, :3] = [3, 2047, 5]
    before = _run(path, ids)
    size = path.stat().st_size
    result = rewrite_file(path)
    assert result.tables == ("word 2048 x 32",)
    assert result.float_bytes == 2048 * 32 * 4 and result.int8_bytes == 2048 * 32 + 2048 * 4
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert stored == {"word_int8": TensorProto.INT8, "word_row_scale": TensorProto.FLOAT, "small": TensorProto.FLOAT, "off_grid": TensorProto.FLOAT}
    assert path.stat().st_size < size - 2048 * 32 * 2
    after = _run(path, ids)
    for old, new in zip(before, after, strict=True):  # storage only: the same values to float32 rounding
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-9)
    assert not np.any(after[0][0, 0]), "the all-zero row stays zero"


def test_a_table_another_node_reads_too_stays_float(tmp_path):
    path = _graph(tmp_path, {"word": _on_grid(2048, 32, 0)}, tied="word")
    assert rewrite_file(path).tables == ()
    assert int8_tables(onnx.load(str(path)).graph).tables == ()


def test_on_grid_tells_rounded_tables_from_float_ones():
    table = np.random.default_rng(0).normal(0, 0.1, (64, 16)).astype(np.float32)
    assert not on_grid(table, *row_quantize(table))
    rounded = _on_grid(64, 16, 0)
    assert on_grid(rounded, *row_quantize(rounded))


@pytest.mark.parametrize("shape", [(64, 16), (3, 5, 16)])
def test_torch_rounds_rows_on_the_grid_onnx_stores(shape):
    rows = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    rows[0] = 0
    quantized, scales = row_quantize(rows.reshape(-1, shape[-1]).numpy())
    expected = torch.from_numpy(quantized.astype(np.float32) * scales).reshape(shape)
    assert torch.equal(row_quantized(rows), expected)


def test_table_quant_rounds_the_rows_it_looks_up_and_passes_gradients_straight_through():
    embedding = torch.nn.Embedding(50, 8)
    table = TableQuant(embedding)
    ids = torch.tensor([[1, 4, 4, 49]])
    out = table(ids)
    assert torch.equal(out, row_quantized(embedding.weight)[ids])
    assert not torch.equal(out, embedding(ids)), "a random table is not on its grid"
    out.sum().backward()
    assert torch.equal(embedding.weight.grad[4], torch.full((8,), 2.0)) and embedding.weight.grad[0].abs().sum() == 0
    assert table.num_embeddings == 50  # attributes read through the wrapper


def test_only_large_untied_tables_outside_ignore_are_quantizable():
    from compress.quant.fake import quantizable_tables

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = torch.nn.Embedding(2048, 32)  # 65,536 values
            self.positions = torch.nn.Embedding(2048, 32)
            self.types = torch.nn.Embedding(2, 32)  # too small
            self.head = torch.nn.Linear(32, 2048, bias=False)
            self.head.weight = self.words.weight  # tied, as a language-model head

    model = Tied()
    assert quantizable_tables(model) == ["positions"]
    assert quantizable_tables(model, ["pos*"]) == []


def test_a_table_that_is_also_a_graph_input_stays_float(tmp_path):
    path = _graph(tmp_path, {"word": _on_grid(2048, 32, 0)})
    model = onnx.load(str(path))
    model.graph.input.append(helper.make_tensor_value_info("word", TensorProto.FLOAT, [2048, 32]))  # overridable, as older exporters wrote
    assert int8_tables(model.graph).tables == ()
