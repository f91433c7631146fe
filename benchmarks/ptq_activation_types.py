"""U8S8 vs S8S8 static INT8 (onnxruntime QDQ, per-channel int8 weights) against float, side by side.

    .venv/bin/python benchmarks/ptq_activation_types.py --workdir runs/bench-ptq-types

Models: the bundled `digits` (calibrated on digits:train) and a ResNet-50-shaped CNN
(transformers' ResNetConfig() layout with a 1000-way head, random weights, calibrated on N(0, 1)
images: only latency is meaningful there). Each is exported with compress's one export, quantized
with compress's `ptq` mechanics (static mode, activations uint8 or int8), and the three graphs are
timed in turns with the one bench timer. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from compress.data.specs import Dataset, load_data
from compress.loading.checkpoint import load
from compress.measure.bench import bench
from compress.measure.settings import BenchSettings
from compress.model import Model, Source
from compress.onnx.export import export_onnx
from compress.quant.ort import quantize_onnx


def resnet50() -> tuple[Model, Dataset]:
    import transformers

    torch.manual_seed(0)
    module = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=1000)).eval()
    wrapped = _Logits(module)
    images = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    model = Model(wrapped, (images[:1],), ("pixel_values",), "classification", Source("factory", "resnet50"), "resnet50")
    return model, Dataset("N(0,1) images", (images,))


class _Logits(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).logits


def measure(model: Model, calibration: Dataset, workdir: Path, batches: tuple[int, ...]) -> dict:
    folder = workdir / model.name
    folder.mkdir(parents=True, exist_ok=True)
    float_onnx = export_onnx(model, folder / "float.onnx").path
    paths = {"float": float_onnx}
    for activations, name in (("uint8", "u8s8"), ("int8", "s8s8")):
        paths[name] = quantize_onnx(float_onnx, folder / f"{name}.onnx", calibration, "static", activations, 8).path
    settings = BenchSettings(batch_sizes=batches, max_seconds=30.0)
    report = bench(list(paths.values()), settings, baseline=float_onnx)
    rows = {f"{r['model']} b{r['batch']}": {"p50_ms": round(r["p50_ms"], 3), "ratio_to_float": round(r["latency_ratio"], 3), "ratio_95": [round(r["latency_ratio_low"], 3), round(r["latency_ratio_high"], 3)]} for r in report.rows}
    return {"model": model.name, "bytes": {k: p.stat().st_size for k, p in paths.items()}, "latency": rows, "cpu": report.cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-ptq-types"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    digits = load("digits")
    print(json.dumps(measure(digits, load_data("digits:train").head(256), args.workdir, (1, 32))), flush=True)
    model, calibration = resnet50()
    print(json.dumps(measure(model, calibration, args.workdir, (1,))), flush=True)


if __name__ == "__main__":
    main()
