"""Which channel counts onnxruntime's CPU kernels run fastest here: the default of `--round-to`.

A small CNN at 28x28 (a 3x3 stem, then three blocks of a 1x1 and a 3x3 conv, each with BN and
ReLU, pooled into a linear head) is built at every width from 40 to 72 channels, exported by
compress's export and timed by compress's bench (batch 1 and 8, one thread, all widths in turns
in one run). The figure is time per MAC relative to the best width. A whole network, not a single
layer: onnxruntime converts activations to its blocked NCHWc layout once per graph, so a one-node
graph charges that conversion to every width and misleads.

    .venv/bin/python benchmarks/prune_round_to.py --workdir work/round_to
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.measure.bench import bench
from compress.measure.settings import BenchSettings
from compress.metrics import mac_count
from compress.model import Model, Source
from compress.onnx.export import export_onnx

WIDTHS = range(40, 73)


def network(width: int) -> nn.Module:
    def conv(cin, cout, k):
        return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    layers = conv(3, width, 3)
    for _ in range(3):
        layers += conv(width, width, 1) + conv(width, width, 3)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/round_to"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 28, 28)
    paths, macs = [], {}
    for width in WIDTHS:
        model = Model(network(width), (x,), ("input",), "classification", Source("factory", f"round_to:{width}"), name=f"w{width}")
        paths.append(export_onnx(model, args.workdir / f"w{width}.onnx").path)
        macs[f"w{width}"] = mac_count(model.module, (x,))
    settings = BenchSettings(batch_sizes=(1, 8), threads=(1,), max_seconds=60.0)
    report = bench(paths, settings, log=lambda s: None)
    result = {}
    for batch in settings.batch_sizes:
        per_mac = {w: report.row(f"w{w}", batch, 1)["p50_ms"] / macs[f"w{w}"] for w in WIDTHS}
        best = min(per_mac.values())
        rel = {w: v / best for w, v in per_mac.items()}
        result[f"batch {batch}"] = {
            "mean_multiples_of": {str(n): round(float(np.mean([rel[w] for w in WIDTHS if w % n == 0])), 3) for n in (1, 2, 4, 8, 16)},
            "mean_not_multiple_of_8": round(float(np.mean([rel[w] for w in WIDTHS if w % 8])), 3),
            "time_per_mac_vs_best": {str(w): round(r, 3) for w, r in rel.items()},
        }
        print(f"batch {batch}", json.dumps(result[f"batch {batch}"]["mean_multiples_of"]), "not /8:", result[f"batch {batch}"]["mean_not_multiple_of_8"])
    print("RESULT_JSON", json.dumps(result))


if __name__ == "__main__":
    main()
