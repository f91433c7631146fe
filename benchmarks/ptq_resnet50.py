"""ResNet-50-shaped CNN (`transformers.ResNetConfig()` defaults, 224x224, random weights with BN
statistics re-estimated; latency only, the logits of random weights mean nothing): compress's
`prune` + `ptq --engine ort` against Torch-Pruning + onnxruntime's own `quantize_static` (QDQ,
U8S8, per channel, MinMax) on the same model, timed side by side with dense FP32 by compress's
bench in one run.

- ours, uniform: `prune --ratio 0.5` (uniform L2 group magnitude: the same widths as theirs), the
  one export, then the `ptq` pass (quant_pre_process, U8S8 per-channel static QDQ, the
  per-operator slow-type check);
- ours, latency: `prune --allocation latency --target-macs <Torch-Pruning's MACs>` (the same MAC
  budget as theirs, channels taken where onnxruntime's per-layer FP32 time per MAC is highest),
  the same export and `ptq`;
- theirs: Torch-Pruning `MetaPruner` + `GroupMagnitudeImportance(p=2)` at 0.5 (classifier kept;
  benchmarks/prune_resnet50.py's baseline), the same export, then `quant_pre_process` +
  `quantize_static(QuantFormat.QDQ, per_channel=True, QUInt8 activations, QInt8 weights)`.
All calibrate on the same 16 N(0, 1) images. The bench times every file in turns with theirs (the
paired ratio and its 95% interval against Torch-Pruning + quantize_static), dense FP32 included.
`--variants` picks which of ours run.

    nice -n 5 .venv/bin/python benchmarks/ptq_resnet50.py --workdir runs/bench-ptq-resnet50 --max-seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from prune_resnet50 import build, reestimate_bn, torch_pruning_baseline  # noqa: E402

from compress.context import Context  # noqa: E402
from compress.data.specs import Dataset  # noqa: E402
from compress.measure.bench import bench  # noqa: E402
from compress.measure.settings import BenchSettings  # noqa: E402
from compress.metrics import mac_count, param_count  # noqa: E402
from compress.onnx.export import export_onnx  # noqa: E402
from compress.passes.prune import PruneConfig, prune  # noqa: E402
from compress.passes.ptq import PtqConfig, ptq  # noqa: E402
from compress.quant.calibration import DatasetReader  # noqa: E402


def images(n: int, seed: int) -> Dataset:
    return Dataset(f"{n} N(0,1) images (seed {seed})", (torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)),))


def theirs_int8(source: Path, target: Path, calibration: Dataset) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = target.with_name("theirs.pre.onnx")
    quant_pre_process(str(source), str(pre))
    quantize_static(str(pre), str(target), DatasetReader(calibration, ["pixel_values"], 8), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


OURS = {
    "uniform": ("compress prune --ratio 0.5 + ptq --engine ort", lambda macs: PruneConfig(ratio=0.5)),
    "latency": ("compress prune --allocation latency --target-macs <TP's> + ptq --engine ort",
                lambda macs: PruneConfig(target_macs=macs, allocation="latency")),
}


def ours_int8(dense, name: str, config: PruneConfig, calibration: Dataset, workdir: Path, log) -> tuple[Path, dict]:
    """One of ours end to end (prune, BN re-estimated, export, ptq): the INT8 file and its figures."""
    started = time.perf_counter()
    ctx = Context(run_dir=workdir, teacher=dense, log=log, data={"calibration": calibration, "heldout": images(8, 4)})
    pruned = prune(dense, config, ctx).model
    reestimate_bn(pruned.module)  # as the baseline gets below: both prune then re-estimate BN
    ctx.artifacts["onnx"] = export_onnx(pruned, workdir / f"ours_{name}.onnx").path
    result = ptq(pruned, PtqConfig(min_fidelity=0.0, calibration_samples=16, batch_size=8), ctx)
    return workdir / f"ours_{name}.int8.onnx", {
        "seconds": round(time.perf_counter() - started, 1), "macs": mac_count(pruned.module, dense.example_inputs),
        "params": param_count(pruned.module), "kept_float": result.figures.get("kept_float"),
        "slower_as_int8": result.figures.get("slower_as_int8")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/ptq_resnet50"))
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the bench's time cap")
    parser.add_argument("--variants", nargs="+", choices=sorted(OURS), default=["uniform", "latency"])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    torch.set_num_threads(1)
    dense = build(args.workdir)
    calibration = images(16, 3)
    dense_path = export_onnx(dense, args.workdir / "dense.onnx").path

    started = time.perf_counter()
    baseline = torch_pruning_baseline(dense)
    reestimate_bn(baseline.module)
    theirs_float = export_onnx(baseline, args.workdir / "theirs.onnx").path
    theirs = args.workdir / "theirs.int8.onnx"
    theirs_int8(theirs_float, theirs, calibration)
    theirs_name = "Torch-Pruning + quantize_static U8S8"
    figures = {theirs_name: {"seconds": round(time.perf_counter() - started, 1), "macs": mac_count(baseline.module, dense.example_inputs),
                             "params": param_count(baseline.module)}}
    files = {"dense FP32": dense_path, theirs_name: theirs}
    for variant in args.variants:
        label, config = OURS[variant]
        files[label], figures[label] = ours_int8(dense, variant, config(figures[theirs_name]["macs"]), calibration, args.workdir, log)

    settings = BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=args.max_seconds)
    # Paired against theirs, so "at least as fast as Torch-Pruning + quantize_static" is one
    # interval per variant; the ratios to dense follow from dense's own ratio to theirs.
    report = bench(list(files.values()), settings, log=log, baseline=theirs)
    dense_vs_theirs = report.row(dense_path.stem, 1, 1)["latency_ratio"]
    rows = {}
    for name, path in files.items():
        row = report.row(path.stem, 1, 1)
        rows[name] = {"onnx_bytes": row["bytes"], "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"],
                      "ratio_to_dense": row["latency_ratio"] / dense_vs_theirs, "vs_theirs": row["latency_ratio"],
                      "vs_theirs_interval": [row["latency_ratio_low"], row["latency_ratio_high"]], **figures.get(name, {})}
    print("RESULT_JSON", json.dumps({"rows": rows, "load_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
