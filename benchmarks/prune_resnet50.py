"""ResNet-50-shaped CNN (`transformers.ResNetConfig()` defaults, 224x224, random weights with BN
statistics re-estimated on random batches; latency only): compress's `prune` against
Torch-Pruning's own pruner, timed side by side by compress's bench in one run.

Variants (each exported by compress's one export, ONNX parity checked):
- dense;
- torch-pruning: `MetaPruner` + `GroupMagnitudeImportance(p=2)`, `pruning_ratio=0.5`, classifier
  ignored (the baseline of benchmarks/README.md);
- compress --ratio 0.5 (uniform L2, the same meaning of ratio);
- compress --allocation latency --target-macs <torch-pruning's MACs>: the same MACs, channels
  taken where the per-layer onnxruntime latency table says they cost time;
- compress --target-latency-ms <half the dense latency>: the budget search, then timed again by
  the bench with everything else.

    .venv/bin/python benchmarks/prune_resnet50.py --workdir work/resnet50
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import transformers as T

from compress.context import Context
from compress.loading.checkpoint import load
from compress.measure.bench import bench
from compress.measure.settings import BenchSettings
from compress.metrics import mac_count, param_count
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity
from compress.data.specs import Dataset
from compress.passes.prune import PruneConfig, prune


def build(workdir: Path):
    torch.manual_seed(0)
    model = T.ResNetForImageClassification(T.ResNetConfig()).eval()
    reestimate_bn(model)
    model.save_pretrained(workdir / "resnet50-hf")
    return load(str(workdir / "resnet50-hf"))


@torch.no_grad()
def reestimate_bn(module: torch.nn.Module, batches: int = 4, size: int = 8) -> None:
    """Random weights give exploding activations unless BN statistics match them: reset and
    re-estimate them (cumulative average) on random images, as baselines.md did."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    module.train()
    for _ in range(batches):
        module(torch.randn(size, 3, 224, 224, generator=g))
    module.eval()


def torch_pruning_baseline(model):
    import torch_pruning as tp

    module = model.copy().module
    inner = module.inner
    pruner = tp.pruner.MetaPruner(module, model.example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[inner.classifier[-1]])
    pruner.step()
    return model.replace(module=module.eval())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/resnet50"))
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the bench's time cap per setting")
    parser.add_argument("--only-budget", action="store_true", help="only the --target-latency-ms part (dense and the budget search)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    dense = build(args.workdir)
    ctx = Context(run_dir=args.workdir, teacher=dense, log=log)
    settings = BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=args.max_seconds)
    variants, paths, rows = {"dense": dense}, {"dense": export_checked(dense, args.workdir / "dense.onnx")}, {}
    if not args.only_budget:
        rows = compare_with_torch_pruning(dense, ctx, variants, paths, settings, args.workdir, log)
    rows.update(latency_budget(dense, ctx, paths, settings, args.workdir, log))
    print("RESULT_JSON", json.dumps(rows))


def export_checked(model, path: Path) -> Path:
    images = Dataset("random images", (torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2)),))
    exported = export_onnx(model, path)
    assert check_parity(model, exported.path, images, 1e-4).passed, path
    return exported.path


def compare_with_torch_pruning(dense, ctx, variants, paths, settings, workdir: Path, log) -> dict:
    seconds = {}
    started = time.perf_counter()
    variants["torch_pruning"] = torch_pruning_baseline(dense)
    seconds["torch_pruning"] = time.perf_counter() - started
    tp_macs = mac_count(variants["torch_pruning"].module, dense.example_inputs)
    for name, config in {
        "compress_ratio": PruneConfig(ratio=0.5),
        "compress_latency_same_macs": PruneConfig(target_macs=tp_macs, allocation="latency"),
    }.items():
        started = time.perf_counter()
        result = prune(dense, config, ctx)
        seconds[name] = time.perf_counter() - started
        variants[name] = result.model
        log(f"{name}: {result.figures}")
    for name, model in variants.items():
        paths.setdefault(name, export_checked(model, workdir / f"{name}.onnx"))
    report = bench(list(paths.values()), settings, log=log, baseline=paths["dense"])
    rows = {name: _row(report.row(name, 1, 1), model, dense, seconds.get(name, 0.0)) for name, model in variants.items()}
    for name in ("compress_ratio", "compress_latency_same_macs"):
        rows[name]["latency_vs_torch_pruning"] = rows[name]["ratio_to_dense"] / rows["torch_pruning"]["ratio_to_dense"]
    return rows


def latency_budget(dense, ctx, paths, settings, workdir: Path, log) -> dict:
    """`--target-latency-ms` at half the dense latency, the dense model timed alone just before
    the search (the budget is in milliseconds, which the machine's load moves: set it under the
    load the search runs in); then the result benched against dense. `landed_vs_budget` is the
    result's p50 in that bench over the budget; `landed_ratio_vs_half` its paired latency ratio
    to dense over 0.5, which no load change between the two measures moves."""
    dense_ms = bench([paths["dense"]], settings, log=log).row("dense", 1, 1)["p50_ms"]
    budget = round(dense_ms * 0.5, 2)
    started = time.perf_counter()
    result = prune(dense, PruneConfig(target_latency_ms=budget), ctx)
    seconds = time.perf_counter() - started
    path = export_checked(result.model, workdir / "compress_latency_budget.onnx")
    report = bench([paths["dense"], path], settings, log=log, baseline=paths["dense"])
    row = _row(report.row("compress_latency_budget", 1, 1), result.model, dense, seconds)
    row.update({"budget_ms": budget, "dense_ms_before_search": dense_ms, "dense_ms_after": report.row("dense", 1, 1)["p50_ms"],
                "search_ratio": result.figures["ratio"], "search_reached_ms": result.figures["reached"],
                "landed_vs_budget": row["p50_ms"] / budget, "landed_ratio_vs_half": row["ratio_to_dense"] / 0.5,
                "load_avg": os.getloadavg()})
    return {"compress_latency_budget": row}


def _row(row: dict, model, dense, seconds: float) -> dict:
    return {"params": param_count(model.module), "macs": mac_count(model.module, dense.example_inputs),
            "onnx_bytes": row["bytes"], "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"], "speedup": row.get("speedup"),
            "ratio_to_dense": row.get("latency_ratio"), "ratio_interval": [row.get("latency_ratio_low"), row.get("latency_ratio_high")],
            "prune_seconds": round(seconds, 1)}


if __name__ == "__main__":
    main()
