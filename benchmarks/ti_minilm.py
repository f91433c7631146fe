"""Teacher Intervention on MiniLM, reproduced at a small budget: ternary (or 2-bit) weights, 8-bit
dynamic inputs, the same steps for every variant; `qat --intervention g` (TI-G for the first
quarter, then plain KD-QAT, the schedule restarting) against `qat --intervention none`.

Each variant is built by the `qat` pass itself (calibration only), then trained by the pass's own
`train_qat` on text:train; every `--eval-every` steps the student is measured on text:heldout
(mean cosine and recall@10 to the float model). The held-out figures only draw the curve: each
phase ends on its last state, as the paper's code does (nothing is selected on them). Writes
`ti_curves.png` and `ti_minilm.json` in --out and prints one RESULT_JSON line.

    nice -n 5 .venv/bin/python benchmarks/ti_minilm.py --out runs/bench-ti --steps 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compress.context import Context
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.metrics import quality
from compress.passes.qat import QatConfig, evaluation_steps, qat, train_qat
from compress.predict import torch_outputs

THRESHOLDS = (0.70, 0.75, 0.80, 0.83, 0.84, 0.90)


def run_variant(intervention: str, args: argparse.Namespace, heldout, reference) -> dict:
    model = load("minilm")
    ctx = Context(run_dir=args.out, teacher=model.copy(), data={"heldout": heldout}, heldout_spec="text:heldout",
                  seed=0, log=lambda line: print(f"[{intervention}] {line}", flush=True))
    config = QatConfig(bits=args.bits, steps=args.steps, lr=args.lr, batch_size=args.batch_size, hidden=args.hidden,
                       intervention=intervention, data="text:train")
    built = qat(model, config.model_copy(update={"steps": 0, "intervention": "none"}), ctx).model
    points: list[dict] = []

    def evaluate(module: torch.nn.Module) -> float:
        figures = quality(model.task, torch_outputs(built.replace(module=module), heldout), reference, None)
        points.append({"cosine": figures["cosine_mean"], "recall_at_10": figures["recall_at_10"]})
        print(f"[{intervention}] held-out cosine {figures['cosine_mean']:.4f} recall@10 {figures['recall_at_10']:.3f}", flush=True)
        return float(len(points))  # rising: fit keeps each phase's last state, as the paper's code does

    started = time.perf_counter()
    figures, results = train_qat(built.module, model, config, ctx, ctx.dataset("text:train", "train"),
                                 evaluate=evaluate, eval_every=args.eval_every)
    curve = [{"step": step, **point} for step, point in zip(evaluation_steps(results), points) if step is not None]
    reached = {str(t): next((p["step"] for p in curve if p["cosine"] >= t), None) for t in THRESHOLDS}
    return {"intervention": intervention, "intervention_steps": figures["intervention_steps"], "curve": curve,
            "steps_to_cosine": reached, "final": curve[-1], "best_cosine": max(p["cosine"] for p in curve),
            "seconds": round(time.perf_counter() - started, 1)}


def plot(runs: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        steps = [p["step"] for p in run["curve"]]
        label = "QAT + TI-G" if run["intervention"] == "g" else f"QAT, intervention {run['intervention']}"
        left.plot(steps, [p["cosine"] for p in run["curve"]], marker="o", label=label)
        right.plot(steps, [p["recall_at_10"] for p in run["curve"]], marker="o", label=label)
        if run["intervention_steps"]:
            for axis in (left, right):
                axis.axvline(run["intervention_steps"], color="grey", linestyle=":", linewidth=1)
    left.set(xlabel="step", ylabel="mean cosine to FP32 (text:heldout)")
    right.set(xlabel="step", ylabel="recall@10 (text:heldout)")
    fig.suptitle(f"MiniLM {args.bits} weights / 8-bit dynamic inputs, {args.steps} steps, batch {args.batch_size}, lr {args.lr:g}")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ti"))
    parser.add_argument("--bits", default="ternary")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--hidden", type=float, default=1.0)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=["g", "none"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = load("minilm")
    heldout = load_data("text:heldout", teacher)
    reference = torch_outputs(teacher, heldout)
    runs = [run_variant(v, args, heldout, reference) for v in args.variants]
    plot(runs, args.out / "ti_curves.png", args)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "heldout": len(heldout), "runs": runs}
    (args.out / "ti_minilm.json").write_text(json.dumps(result, indent=1))
    print("RESULT_JSON " + json.dumps({r["intervention"]: {"steps_to_cosine": r["steps_to_cosine"], "final": r["final"],
                                                          "seconds": r["seconds"]} for r in runs}))


if __name__ == "__main__":
    main()
