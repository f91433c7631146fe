"""ResNet-50-shaped CNN (`transformers.ResNetConfig()` defaults, 224x224, random weights with BN
statistics re-estimated; latency only, the logits of random weights mean nothing): compress's
`prune --ratio 0.5` + `ptq --engine ort` against Torch-Pruning + onnxruntime's own
`quantize_static` (QDQ, U8S8, per channel, MinMax) on the same model, timed side by side with
dense FP32 by compress's bench in one run.

- ours: `prune` (uniform L2 group magnitude, ratio 0.5), the one export, then the `ptq` pass
  (quant_pre_process, U8S8 per-channel static QDQ, the per-operator slow-type check);
- theirs: Torch-Pruning `MetaPruner` + `GroupMagnitudeImportance(p=2)` at 0.5 (classifier kept;
  benchmarks/prune_resnet50.py's baseline), the same export, then `quant_pre_process` +
  `quantize_static(QuantFormat.QDQ, per_channel=True, QUInt8 activations, QInt8 weights)`.
Both calibrate on the same 16 N(0, 1) images.

    .venv/bin/python benchmarks/ptq_resnet50.py --workdir work/ptq_resnet50
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/ptq_resnet50"))
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the bench's time cap")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    torch.set_num_threads(1)
    dense = build(args.workdir)
    calibration = images(16, 3)
    dense_path = export_onnx(dense, args.workdir / "dense.onnx").path
    seconds = {}

    started = time.perf_counter()
    ctx = Context(run_dir=args.workdir, teacher=dense, log=log, data={"calibration": calibration, "heldout": images(8, 4)})
    pruned = prune(dense, PruneConfig(ratio=0.5), ctx).model
    reestimate_bn(pruned.module)  # as the baseline gets below: both prune then re-estimate BN
    ctx.artifacts["onnx"] = export_onnx(pruned, args.workdir / "ours.onnx").path
    result = ptq(pruned, PtqConfig(min_fidelity=0.0, calibration_samples=16, batch_size=8), ctx)
    seconds["ours"] = time.perf_counter() - started
    ours = args.workdir / "ours.int8.onnx"

    started = time.perf_counter()
    baseline = torch_pruning_baseline(dense)
    reestimate_bn(baseline.module)
    theirs_float = export_onnx(baseline, args.workdir / "theirs.onnx").path
    theirs = args.workdir / "theirs.int8.onnx"
    theirs_int8(theirs_float, theirs, calibration)
    seconds["theirs"] = time.perf_counter() - started

    settings = BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=args.max_seconds)
    report = bench([dense_path, theirs, ours], settings, log=log, baseline=dense_path)
    rows = {}
    for name, path in (("dense FP32", dense_path), ("Torch-Pruning + quantize_static U8S8", theirs), ("compress prune + ptq", ours)):
        row = report.row(path.stem, 1, 1)
        rows[name] = {"onnx_bytes": row["bytes"], "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"], "ratio_to_dense": row["latency_ratio"],
                      "interval": [row["latency_ratio_low"], row["latency_ratio_high"]], "speedup": row["speedup"]}
    rows["compress prune + ptq"].update(seconds=round(seconds["ours"], 1), kept_float=result.figures.get("kept_float"),
                                        slower_as_int8=result.figures.get("slower_as_int8"))
    rows["Torch-Pruning + quantize_static U8S8"]["seconds"] = round(seconds["theirs"], 1)
    ours_ratio = rows["compress prune + ptq"]["ratio_to_dense"] / rows["Torch-Pruning + quantize_static U8S8"]["ratio_to_dense"]
    print("RESULT_JSON", json.dumps({"rows": rows, "ours_latency_vs_theirs": ours_ratio, "load_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
