"""Acceptance figures of the measurement issue (benchmarks/README.md, "Measurement"), each from the
compress CLI in a subprocess, as a user would run it. Run from the repository root after
`make install`:

    .venv/bin/python benchmarks/measure_acceptance.py aa          # A/A: the same ONNX as both models, 10 default runs
    .venv/bin/python benchmarks/measure_acceptance.py speedup     # digits ResNet-20 width 16 vs width 8
    .venv/bin/python benchmarks/measure_acceptance.py startup     # --help, --version, passes: median of 5
    .venv/bin/python benchmarks/measure_acceptance.py default     # `compress run` (make demo): wall time, 3 runs
    .venv/bin/python benchmarks/measure_acceptance.py minilm      # `compress run --model minilm export bench`: time, peak RSS

Each prints a markdown table and the load average around it; files go to benchmarks/work/
(git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "measure"
COMPRESS = [str(ROOT / ".venv" / "bin" / "compress")]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def compress(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*COMPRESS, *args], capture_output=True, text=True, check=check, cwd=WORK)


def timed(*args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `compress ARGS`, from GNU time."""
    done = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *COMPRESS, *args], capture_output=True, text=True, check=True, cwd=WORK)
    seconds, peak_kb = done.stderr.strip().splitlines()[-1].split()[1:]
    return float(seconds), int(peak_kb) / 1024


def digits_onnx() -> Path:
    folder = WORK / "digits"
    if not (folder / "model.onnx").is_file():
        compress("run", "--model", "digits", "--out", str(folder), "export")
    return folder / "model.onnx"


def aa(runs: int = 10) -> None:
    model = digits_onnx()
    copy = WORK / "copy.onnx"
    shutil.copy(model, copy)  # the same bytes under another name: two sessions of one graph
    print(f"A/A: `compress bench {copy.name} --baseline {model.name}` (default settings), {runs} runs; {load()}\n")
    print("| run | ratio | 95% interval | contains 1.0 | stopped | calls | seconds | CPU share | load 1 min |")
    print("|---:|---:|---|---|---|---:|---:|---:|---:|")  # the interval's confidence at the look it stopped on is in the JSON
    inside = 0
    worst = 0.0
    for run in range(1, runs + 1):
        out = WORK / f"aa_{run}.json"
        compress("bench", str(copy), "--baseline", str(model), "--json", str(out), "--seed", str(run))
        r = json.loads(out.read_text())["models"]["copy"]["results"]["b1_t1"]
        contains = r["latency_ratio_low"] <= 1.0 <= r["latency_ratio_high"]
        inside += contains
        worst = max(worst, abs(r["latency_ratio"] - 1.0))
        print(f"| {run} | {r['latency_ratio']:.4f} | {r['latency_ratio_low']:.4f}-{r['latency_ratio_high']:.4f} | "
              f"{'yes' if contains else 'NO'} | {r['stopped']} | {r['calls']} | {r['seconds']:.2f} | {r['cpu_share']:.2f} | {r['load_1m']:.2f} |")
    print(f"\n{inside}/{runs} intervals contain 1.0; largest |ratio - 1| = {worst:.4f}; {load()}")


def speedup() -> None:
    sys.path.insert(0, str(ROOT))
    import compress as library
    from compress.models.digits import build_module
    from compress.onnx.export import export_onnx

    wide = library.load("digits")
    narrow = wide.replace(module=build_module(8).eval())  # compress.models.digits:build_module(8): half the channels
    w16, w8 = WORK / "width16.onnx", WORK / "width8.onnx"
    export_onnx(wide, w16)
    export_onnx(narrow, w8)
    print(f"Known speed-up: digits ResNet-20 width 8 against width 16 (about 1/4 of the MACs); {load()}\n")
    print("| run | width-8 / width-16 latency | 95% interval | excludes 1.0 | stopped | calls | CPU share |")
    print("|---:|---:|---|---|---|---:|---:|")
    for run in range(1, 4):
        out = WORK / f"speedup_{run}.json"
        compress("bench", str(w8), "--baseline", str(w16), "--json", str(out), "--seed", str(run))
        r = json.loads(out.read_text())["models"]["width8"]["results"]["b1_t1"]
        print(f"| {run} | {r['latency_ratio']:.3f} ({r['speedup']:.2f}x faster) | {r['latency_ratio_low']:.3f}-{r['latency_ratio_high']:.3f} | "
              f"{'yes' if r['latency_ratio_high'] < 1.0 else 'NO'} | {r['stopped']} | {r['calls']} | {r['cpu_share']:.2f} |")
    print(f"\n{load()}")


def startup() -> None:
    print(f"Start-up: median of 5 wall times; {load()}\n")
    print("| command | median s | runs (s) | heavy modules imported |")
    print("|---|---:|---|---|")
    for args in (["--help"], ["--version"], ["passes"]):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            compress(*args)
            times.append(time.perf_counter() - start)
        probe = ("import sys\nfrom compress.cli.main import cli\ntry:\n    cli(%r)\nexcept SystemExit:\n    pass\n"
                 "print('HEAVY:' + ','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'matplotlib', 'transformers', 'sklearn') if m in sys.modules))" % args)
        heavy = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
        imported = heavy.stdout.strip().splitlines()[-1].removeprefix("HEAVY:")
        print(f"| `compress {' '.join(args)}` | {statistics.median(times):.3f} | {', '.join(f'{t:.2f}' for t in times)} | {imported or 'none'} |")
    print(f"\n{load()}")


def default() -> None:
    print(f"`compress run` (the default recipe, what `make demo` runs), 3 runs; {load()}\n")
    print("| run | wall s | peak RSS MB | bench step s | stopped |")
    print("|---:|---:|---:|---:|---|")
    for run in range(1, 4):
        out = WORK / f"default_{run}"
        seconds, rss = timed("run", "--out", str(out))
        bench = json.loads((out / "report.json").read_text())["steps"][-1]
        print(f"| {run} | {seconds:.1f} | {rss:.0f} | {bench['seconds']:.2f} | {bench['figures']['stopped']} |")
    print(f"\n{load()}")


def minilm() -> None:
    print(f"`compress run --model minilm --out ... export bench`; {load()}\n")
    print("| run | wall s | peak RSS MB | step seconds |")
    print("|---:|---:|---:|---|")
    for run in range(1, 3):
        out = WORK / f"minilm_{run}"
        seconds, rss = timed("run", "--model", "minilm", "--out", str(out), "export", "bench")
        steps = json.loads((out / "report.json").read_text())["steps"]
        per_step = ", ".join(f"{step['name']} {step['seconds']:.1f}" for step in steps)
        print(f"| {run} | {seconds:.1f} | {rss:.0f} | {per_step} |")
    print(f"\n{load()}")


if __name__ == "__main__":
    WORK.mkdir(parents=True, exist_ok=True)
    figures = {"aa": aa, "speedup": speedup, "startup": startup, "default": default, "minilm": minilm}
    for name in sys.argv[1:] or figures:
        figures[name]()
        print()
