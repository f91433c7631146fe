"""One table: every quantization engine on digits and MiniLM, each a real `compress run`, then
every shipped ONNX timed side by side against the model's float export by compress's bench in
one call per model.

Engines (the steps given to `compress run --model M --out DIR ...`):
- ort:     export ptq --engine ort          (U8S8 static QDQ for digits, dynamic MatMul for MiniLM)
- inc:     export ptq --engine inc          (Intel Neural Compressor PT2E static INT8; the `inc` extra)
- ort4:    export ptq --weight-bits 4       (MiniLM only: packed 4-bit MatMulNBits)
- qat:     qat --bits 8 --data <train> --steps N export
- qat_ti:  qat --bits 8 --data <train> --steps N --intervention g export   (MiniLM; digits: --intervention block)
Quality is the run's own figure for the final ONNX on the held-out split (digits: accuracy on
digits:test; MiniLM: mean cosine and recall@10 to the float model on text:heldout); seconds are
the run's step seconds summed (export included for every engine). A run that fails is a row with
its error line.

    .venv/bin/python benchmarks/quant_engines.py --workdir work/engines
    .venv/bin/python benchmarks/quant_engines.py --workdir work/engines --models minilm --engines ort ort4 inc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from compress.measure.bench import bench
from compress.measure.settings import BenchSettings

TRAIN = {"digits": "digits:train", "minilm": "text:train"}


def steps(engine: str, model: str, qat_steps: int) -> list[str] | None:
    qat = ["qat", "--bits", "8", "--data", TRAIN[model], "--steps", str(qat_steps)]
    return {
        "ort": ["export", "ptq", "--engine", "ort", "--no-time-check"],
        "inc": ["export", "ptq", "--engine", "inc", "--no-time-check"],
        "ort4": ["export", "ptq", "--weight-bits", "4", "--min-fidelity", "0.9", "--no-time-check"] if model == "minilm" else None,
        "qat": [*qat, "export"],
        "qat_ti": [*qat, "--intervention", "g" if model == "minilm" else "block", "export"],
    }[engine]


def run(model: str, engine: str, argv: list[str], workdir: Path) -> dict:
    out = workdir / f"{model}-{engine}"
    command = [str(Path(sys.executable).with_name("compress")), "run", "--model", model, "--out", str(out), *argv]
    shown = "compress " + " ".join(command[1:])
    print(f"{model} {engine}: {shown}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"command": shown, "error": last}
    report = json.loads((out / "report.json").read_text())
    final = report["summary"]["final"]
    return {"command": shown, "onnx": str(out / report["summary"]["onnx"]["path"]), "float_onnx": str(out / "model.onnx"),
            "bytes": final["onnx_bytes"], "quality": final["onnx_quality"], "seconds": round(sum(s["seconds"] for s in report["steps"]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/engines"))
    parser.add_argument("--models", nargs="+", default=["digits", "minilm"])
    parser.add_argument("--engines", nargs="+", default=["ort", "inc", "ort4", "qat", "qat_ti"])
    parser.add_argument("--qat-steps", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="the bench's time cap")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = {}
    for model in args.models:
        rows = {e: run(model, e, argv, args.workdir) for e in args.engines if (argv := steps(e, model, args.qat_steps)) is not None}
        made = {e: r for e, r in rows.items() if "onnx" in r}
        floats = [r["float_onnx"] for r in made.values() if Path(r["float_onnx"]).is_file()]
        if made and floats:
            # Every engine's file and the float export (the ptq runs' model.onnx), one paired bench.
            paths = [Path(floats[0])] + [Path(r["onnx"]) for r in made.values()]
            links = []
            for engine, path in zip(["float", *made], paths):  # distinct stems for the bench's rows
                link = args.workdir / f"{model}-{engine}.onnx"
                link.unlink(missing_ok=True)
                link.symlink_to(path.resolve())
                links.append(link)
            report = bench(links, BenchSettings(batch_sizes=(1,), threads=(1,), max_seconds=args.max_seconds), baseline=links[0])
            for engine, link in zip(["float", *made], links):
                row = report.row(link.stem, 1, 1)
                target = rows.setdefault(engine, {"bytes": row["bytes"]})
                target.update(p50_ms=row["p50_ms"], latency_ratio=row["latency_ratio"],
                              interval=[row["latency_ratio_low"], row["latency_ratio_high"]])
        table[model] = rows
    print("RESULT_JSON", json.dumps({"table": table, "load_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
