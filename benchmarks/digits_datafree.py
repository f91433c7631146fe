"""Data-free distillation on digits: four ways to train the half-width pruned student, side by side.

    .venv/bin/python benchmarks/digits_datafree.py --out runs/bench-datafree [--only ours]

Each variant is one `compress run` (prune --ratio 0.5, then its data, then distill, then export) in
its own process, with a fresh synthetic-set cache so synthesis is really timed. Figures: accuracy
of the exported ONNX on the real test split (digits:test, never trained on; distill keeps its last
state, `--eval-every 0`, so the test split picks nothing), the wall seconds of the synthesize and
distill steps from report.json, the CPU seconds of the whole process (user + system, from
getrusage: on this shared machine wall time depends on what else runs, CPU time much less), and
the 1-minute load average before and after. Prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

COMPRESS = str(Path(sys.executable).with_name("compress"))
PRUNE = ["prune", "--ratio", "0.5"]
EXPORT = ["export"]
# Every variant's distill keeps its last state (the held-out test split must not pick one), batch 64.
LAST_STATE = ["--eval-every", "0", "--batch-size", "64"]
NOISE_IMAGES = 128

# name -> (what it is, the steps between prune and export). The plain-DeepInversion and noise rows
# repeat the baseline of research/baselines.md: 128 images, 1000 steps at full resolution, all BN
# layers weighted alike, then 600 KD steps with +-2 px shifts and no mixing.
VARIANTS = {
    "noise": ("KD on Gaussian noise (128 images)", ["distill", "--data", "tensors:{noise}", "--steps", "600", "--lr", "2e-3", "--shift-px", "2", "--mix", "0"]),
    "plain-di": ("plain DeepInversion (128 images, 1000 steps) + KD", [
        "synthesize", "--images", "128", "--batch-size", "128", "--steps", "1000", "--downsample", "1", "--first-bn-weight", "1",
        "distill", "--data", "synthetic", "--steps", "600", "--lr", "2e-3", "--shift-px", "2", "--mix", "0"]),
    "ours": ("ours: synthesize (its defaults: 256 images, 100 steps at 1/4 resolution) + 800 KD steps with shifts and mixing",
             ["synthesize", "distill", "--data", "synthetic", "--steps", "800", "--lr", "2e-3", "--mix", "0.5"]),
    "real": ("KD on the real train split (1437 images)", ["distill", "--data", "digits:train", "--steps", "600", "--lr", "2e-3"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-datafree"))
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS), help="run only these variants (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    noise = _noise_file(args.out / "noise.safetensors", args.seed)
    rows = []
    for name in args.only or list(VARIANTS):
        label, steps = VARIANTS[name]
        steps = [s.format(noise=noise) for s in steps] + LAST_STATE
        rows.append((label, name, steps, _run(name, steps, args.out, args.seed)))
    print("| variant | test accuracy (ONNX) | synthesize s | distill s | total s (wall) | process CPU s | load avg before / after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, _name, _steps, r in rows:
        print(f"| {label} | {r['accuracy']:.4f} | {r['synthesize_s']:.1f} | {r['distill_s']:.1f} | {r['synthesize_s'] + r['distill_s']:.1f} "
              f"| {r['cpu_s']:.1f} | {r['load_before']:.1f} / {r['load_after']:.1f} |")
    print()
    for label, name, steps, _r in rows:
        print(f"- {label}: `compress run --model digits --out {args.out / name} --seed {args.seed} {' '.join([*PRUNE, *steps, *EXPORT])}`")
    print("RESULT_JSON " + json.dumps({name: r for _l, name, _s, r in rows}))


def _noise_file(path: Path, seed: int) -> str:
    images = torch.randn(NOISE_IMAGES, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    save_file({"input": images}, str(path))
    return str(path)


def _run(name: str, steps: list[str], out: Path, seed: int) -> dict:
    folder = out / name
    command = [COMPRESS, "run", "--model", "digits", "--out", str(folder), "--seed", str(seed), "--json", *PRUNE, *steps, *EXPORT]
    print(f"# {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COMPRESS_CACHE_DIR": cache})
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    seconds = {s["name"]: s["seconds"] for s in report["steps"]}
    distill_figures = next(s["figures"] for s in report["steps"] if s["name"] == "distill")
    return {
        "accuracy": report["summary"]["final"]["onnx_quality"]["accuracy"],
        "synthesize_s": seconds.get("synthesize", distill_figures.get("synthetic_seconds_inversion", 0.0)),
        "distill_s": seconds["distill"],
        "process_wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
