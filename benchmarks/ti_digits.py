"""Teacher Intervention for CNNs on digits: low-bit weights (4-bit, ternary), 8-bit static inputs,
the same steps for every variant; `qat --intervention block` (for the first quarter every residual
block reads the float teacher's output of the block before it, plus the per-block output MSE;
then plain KD-QAT, the schedule restarting) against `qat --intervention none`.

Each variant is built by the `qat` pass itself (calibration only), then trained by the pass's own
`train_qat` on digits:train; every `--eval-every` steps the student's accuracy on digits:test is
measured. The held-out figures only draw the curve: each phase ends on its last state (nothing is
selected on them). Writes `ti_digits.json` in --out, the curves PNG (default
benchmarks/figures/ti_digits_curves.png) and prints one RESULT_JSON line.

    nice -n 5 .venv/bin/python benchmarks/ti_digits.py --out runs/bench-ti-digits --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.metrics import quality
from compress.passes.qat import QatConfig, evaluation_steps, qat, train_qat
from compress.predict import torch_outputs

THRESHOLDS = (0.90, 0.95, 0.97, 0.98, 0.99)


def run_variant(bits: str, intervention: str, seed: int, args: argparse.Namespace, heldout) -> dict:
    model = load("digits")
    tag = f"{bits}/{intervention}/seed {seed}"
    ctx = Context(run_dir=args.out, teacher=model.copy(), data={"heldout": heldout}, heldout_spec="digits:test",
                  seed=seed, log=lambda line: print(f"[{tag}] {line}", flush=True))
    config = QatConfig(bits=bits, steps=args.steps, lr=args.lr, batch_size=args.batch_size, intervention=intervention,
                       intervention_steps=args.intervention_steps if intervention != "none" else None, data="digits:train")
    built = qat(model, config.model_copy(update={"steps": 0, "intervention": "none"}), ctx).model
    points: list[float] = []

    def evaluate(module: torch.nn.Module) -> float:
        figures = quality(model.task, torch_outputs(built.replace(module=module), heldout), None, heldout.labels)
        points.append(figures["accuracy"])
        return float(len(points))  # rising: fit keeps each phase's last state, as the paper's code does

    started = time.perf_counter()
    figures, results = train_qat(built.module, model, config, ctx, ctx.dataset("digits:train", "train"),
                                 evaluate=evaluate, eval_every=args.eval_every)
    curve = [{"step": step, "accuracy": accuracy} for step, accuracy in zip(evaluation_steps(results), points) if step is not None]
    reached = {str(t): next((p["step"] for p in curve if p["accuracy"] >= t), None) for t in THRESHOLDS}
    return {"bits": bits, "intervention": intervention, "seed": seed, "intervention_steps": figures["intervention_steps"],
            "curve": curve, "steps_to_accuracy": reached, "final": curve[-1]["accuracy"],
            "seconds": round(time.perf_counter() - started, 1)}


def plot(runs: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.bits), figsize=(5.5 * len(args.bits), 4), squeeze=False)
    colours = {"block": "tab:blue", "none": "tab:orange"}
    for axis, bits in zip(axes[0], args.bits):
        for run in (r for r in runs if r["bits"] == bits):
            label = f"{'QAT + TI (block)' if run['intervention'] == 'block' else 'QAT, no TI'}, seed {run['seed']}"
            axis.plot([p["step"] for p in run["curve"]], [p["accuracy"] for p in run["curve"]], marker=".",
                      color=colours.get(run["intervention"]), alpha=0.5 + 0.5 / (1 + run["seed"]), label=label)
            if run["intervention_steps"]:
                axis.axvline(run["intervention_steps"], color="grey", linestyle=":", linewidth=1)
        axis.set(xlabel="step", ylabel="accuracy on digits:test (torch fake-quant)",
                 title=f"{bits if bits == 'ternary' else bits + '-bit'} weights / 8-bit inputs")
        axis.set_ylim(max(0.0, min(p["accuracy"] for r in runs if r["bits"] == bits for p in r["curve"]) - 0.02), 1.005)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    phase = f", {args.intervention_steps} intervention steps" if args.intervention_steps else ""
    fig.suptitle(f"digits ResNet-20 QAT, {args.steps} steps{phase}, batch {args.batch_size}, lr {args.lr:g}, digits:train")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ti-digits"))
    parser.add_argument("--figure", type=Path, default=Path(__file__).parent / "figures" / "ti_digits_curves.png")
    parser.add_argument("--bits", nargs="+", default=["4", "ternary"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--intervention-steps", type=int, default=None, help="qat's --intervention-steps (default a quarter of --steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["block", "none"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    heldout = load_data("digits:test", load("digits"))
    runs = [run_variant(b, v, s, args, heldout) for b in args.bits for s in args.seeds for v in args.variants]
    plot(runs, args.figure, args)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "heldout": len(heldout), "runs": runs,
              "load_1m": os.getloadavg()[0]}
    (args.out / "ti_digits.json").write_text(json.dumps(result, indent=1))
    print("RESULT_JSON " + json.dumps({f"{r['bits']}/{r['intervention']}/{r['seed']}": {
        "steps_to_accuracy": r["steps_to_accuracy"], "final": r["final"], "seconds": r["seconds"]} for r in runs} | {"load_1m": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
