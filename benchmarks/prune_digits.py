"""digits: `prune --ratio 0.5` (and, where the `distill` pass exists, the acceptance run
`prune --ratio 0.5 distill --data digits:train export bench`, also with distill's last state): MACs,
params, ONNX bytes, test accuracy, and onnxruntime latency at batch 1 and 32, original and pruned timed side by side by
the bench pass in the same run.

    .venv/bin/python benchmarks/prune_digits.py --workdir work/prune_digits
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from compress.passes import PASSES

BENCH = ["bench", "--batch-sizes", "1", "--batch-sizes", "32"]
RUNS = {
    "prune": ["prune", "--ratio", "0.5", "export", *BENCH],
    "prune+distill": ["prune", "--ratio", "0.5", "distill", "--data", "digits:train", "export", *BENCH],
    # distill keeps its best state by agreement with the original on 10% of digits:train held
    # aside (--validation-fraction); the last state (no selection at all) is shown beside it.
    "prune+distill, last state": ["prune", "--ratio", "0.5", "distill", "--data", "digits:train", "--eval-every", "0", "export", *BENCH],
    # logit KL alone, without the cross-entropy distill adds by default on labelled data
    "prune+distill --ce 0": ["prune", "--ratio", "0.5", "distill", "--data", "digits:train", "--ce", "0", "export", *BENCH],
}


def figures(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    bench = json.loads((out / "bench.json").read_text())["models"]
    row = {}
    for label, key in (("original", "original"), ("pruned", "final")):
        stats = report["summary"][key]
        row[label] = {"params": stats["params"], "macs": stats["macs"], "onnx_bytes": stats["onnx_bytes"],
                      "accuracy": stats["quality"].get("accuracy")}
    for batch in (1, 32):
        original = bench["original"]["results"][f"b{batch}_t1"]
        pruned = bench["model"]["results"][f"b{batch}_t1"]
        # The bench's paired figure: exp(median ABBA-block log-ratio), with its 95% interval.
        row[f"batch{batch}"] = {"original_p50_ms": original["p50_ms"], "pruned_p50_ms": pruned["p50_ms"], "speedup": pruned["speedup"],
                                "speedup_interval": [1 / pruned["latency_ratio_high"], 1 / pruned["latency_ratio_low"]]}
    row["macs_reduction"] = row["original"]["macs"] / row["pruned"]["macs"]
    row["accuracy_drop_points"] = 100 * (row["original"]["accuracy"] - row["pruned"]["accuracy"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("work/prune_digits"))
    parser.add_argument("--only", choices=sorted(RUNS), action="append", help="run only these (repeatable)")
    args = parser.parse_args()
    result = {}
    for name, steps in RUNS.items():
        if args.only and name not in args.only:
            continue
        if "distill" in steps and "distill" not in PASSES:
            print(f"{name}: skipped, this compress has no distill pass", flush=True)
            continue
        out = args.workdir / name.replace("+", "_").replace(", ", "_").replace(" --", "_").replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        command = [str(Path(sys.executable).with_name("compress")), "run", "--model", "digits", "--out", str(out), *steps]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        result[name] = {**figures(out), "load_avg": os.getloadavg()}
        print(name, json.dumps(result[name]), flush=True)
    print("RESULT_JSON", json.dumps(result))


if __name__ == "__main__":
    main()
