"""The per-layer onnxruntime latency table and the latency budget."""

from __future__ import annotations

import json

import pytest

from compress.context import Context
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.passes.prune import PruneConfig, prune
from compress.pruning.latency import TABLE_FILE, _layer_of, channel_cost, layer_table
from compress.pruning.plan import pruner_for


def test_kernels_map_to_their_layers_by_shape_then_scope():
    signatures = {"layer1.2.conv1": ((3, 3, 16, 16), (16, 32, 32)), "layer1.2.conv2": ((3, 3, 16, 16), (16, 32, 32)),
                  "layer2.0.conv1": ((3, 3, 16, 32), (16, 32, 32))}
    shapes = [[1, 16, 32, 32], [16, 16, 3, 3], [16]]
    first = _layer_of("/layer1/layer1.2/conv2/Conv_output_0_nchwc", shapes, signatures, taken=set())
    assert first == "layer1.2.conv2"
    assert _layer_of("/layer1/layer1.2/relu1/Relu_output_0_nchwc", shapes, signatures, taken={first}) == "layer1.2.conv1"
    assert _layer_of("/fc/Gemm", [[1, 64], [10, 64]], signatures, taken=set()) is None


def test_the_table_is_measured_once_and_read_from_the_run_folder(tmp_path):
    digits = load("digits")
    logged = []
    table = layer_table(digits, tmp_path, 1, 1, logged.append)
    assert set(table) >= {"conv1", "layer1.0.conv1", "layer3.2.conv2"} and all(ms > 0 for ms in table.values())
    assert json.loads((tmp_path / TABLE_FILE).read_text())["layers_ms"] == table
    assert layer_table(digits, tmp_path, 1, 1, logged.append) == table
    assert "latency table from" in logged[-1]
    cost = channel_cost(pruner_for(digits, ()), tmp_path, 1, 1, logged.append)
    assert set(cost) == {g.name for g in pruner_for(digits, ()).groups} and all(c > 0 for c in cost.values())


def test_latency_allocation_prunes_and_caches_its_table(tmp_path):
    digits = load("digits")
    result = prune(digits, PruneConfig(ratio=0.5, allocation="latency"), Context(run_dir=tmp_path, teacher=digits))
    assert (tmp_path / TABLE_FILE).is_file()
    assert result.figures["channels_kept"] < result.figures["channels"]


@pytest.mark.slow
def test_an_unreachable_latency_budget_says_the_best_reached(tmp_path):
    digits = load("digits")
    with pytest.raises(UsageError, match=r"--target-latency-ms: 1e-06: unreachable: the best reached is .* ms at ratio 0.95"):
        prune(digits, PruneConfig(target_latency_ms=1e-6), Context(run_dir=tmp_path, teacher=digits))
    assert not list(tmp_path.glob(".prune-latency-*"))


def test_the_latency_probe_reads_a_pruned_model_as_faster_than_the_original(tmp_path):
    from compress.pruning.plan import Ratios
    from compress.pruning.search import LatencyProbe

    digits = load("digits")
    probe = LatencyProbe(digits, tmp_path, batch=8, threads=1, max_seconds=1.0)
    pruner = pruner_for(digits, ())
    small = pruner.apply(pruner.edit(pruner.scores("l2"), Ratios(0.75, 0, 0), "uniform", 1, True))
    assert 0 < probe(small) < probe.original_ms
