"""`compress run`: passes chained on the command line or read from a recipe, into a run folder.

    compress run                                   # the bundled default recipe on digits
    compress run --model digits --out runs/x export --opset 17 bench --batch-sizes 1
    compress run --model minilm --recipe recipe.yaml

Each pass subcommand returns a validated step; the result callback hands the list to the library
(click's `imagepipe` habit), the same call a recipe file reaches.
"""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import config_options, given, load_model, model_options
from compress.cli.render import echo_json, fmt, progress_logger, stdout, table
from compress.context import check_device
from compress.rundir import check_out
from compress.errors import RunFailed, UsageError
from compress.measure.settings import speed_verdict
from compress.passes import PASSES
from compress.resume import DEFAULT_EVERY


@click.group(chain=True, invoke_without_command=True)
@click.option("--model", "model_spec", default=None, help="Bundled name (digits, minilm), pkg.module:factory, a Hugging Face folder, or a saved compress folder.")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False), default=None, help="YAML recipe with version, steps and gates.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default: runs/default for the default recipe, else runs/<model>).")
@click.option("--data", default=None, help="Held-out data spec for quality (default: the model's own, e.g. digits:test, text:heldout); also text:FILE, images:DIR, tensors:FILE.")
@click.option("--seed", type=int, default=0, show_default=True, help="The one seed of everything random in the run (example inputs, data order, training, probes).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where passes that train run (cuda only where torch has a CUDA device).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=DEFAULT_EVERY, show_default=True,
              help="Training steps between checkpoints, kept beside --out (.NAME.checkpoints) until the run completes; 0: none.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run into --out from its checkpoints (the same model, recipe, seed and data).")
@model_options
def run(**_: object) -> None:
    """Run passes on a model. With no arguments: the default recipe on the bundled digits model."""


@run.result_callback()
def _run_steps(steps, model_spec, recipe_path, out, data, seed, device, as_json, checkpoint_every, resume, weights, input_shapes, seq_len, task,
               trust_pickle, output_name):
    from compress.recipe import Recipe, default_recipe, read_recipe
    from compress.reporting.digest import file_sha256
    from compress.runner import run as run_recipe

    if steps and recipe_path:
        raise UsageError("--recipe", recipe_path, "give either a recipe or pass subcommands, not both")
    is_default = not steps and not recipe_path
    recipe = read_recipe(recipe_path) if recipe_path else (Recipe(tuple(steps)) if steps else default_recipe())
    spec = model_spec or recipe.model
    if spec is None:
        raise UsageError("--model", "none given", "name the model: --model digits (or put model: in the recipe)")
    log = progress_logger()
    if out is not None:  # fail before the (possibly slow) model load
        check_out(out)
    if data is not None:  # a step's own --data that is the held-out data: refused before the load too
        from compress.pipeline import check_data

        check_data(recipe.steps, data)
    check_device(device)
    model = load_model(spec, weights, input_shapes, seq_len, task, trust_pickle, output_name, seed)
    out = Path(out or ("runs/default" if is_default and not model_spec else f"runs/{model.name}"))
    inputs = {p: file_sha256(p) for p in (weights, recipe_path) if p}
    log(f"running {len(recipe.steps)} step(s) on {model.name} into {out}")
    report = run_recipe(model, recipe, out, seed=seed, device=device, data=data, log=log, inputs_sha256=inputs,
                        checkpoint_every=checkpoint_every, resume=resume)
    if report is None:  # a rank other than 0 under torchrun: rank 0 prints the result
        return
    if as_json:
        echo_json(report)
    else:
        _print_report(report, out)
    violations = report["gates"]["violations"]
    if violations:
        raise RunFailed(f"gate: {len(violations)} budget(s) violated: " + "; ".join(v["message"] for v in violations))


def _print_report(report: dict, out: Path) -> None:
    console = stdout()
    rows = [["original", report["original"]["params"], report["original"]["macs"], report["original"]["bytes"], "-",
             _quality(report["original"]), "-"]]
    for step in report["steps"]:
        after = step["after"]
        rows.append([step["name"], after["params"], after["macs"], after["bytes"], step["seconds"], _quality(after), _figures(step["figures"])])
    console.print(table(f"compress run: {report['model']['name']} (quality on {report['data'] or 'no held-out data: pass --data'})",
                        ["step", "params", "MACs", "bytes", "seconds", "quality", "figures"], rows))
    s = report["summary"]
    metric = s["quality_metric"]
    console.print(table("summary", ["", "ONNX bytes", "p50 ms", "p90 ms", f"{metric} (torch)", f"{metric} (ONNX)"], [
        [label, s[label]["onnx_bytes"], s[label]["p50_ms"], s[label]["p90_ms"], s[label]["quality"].get(metric),
         (s[label].get("onnx_quality") or {}).get(metric)]
        for label in ("original", "final")
    ]))
    gates = report["gates"]
    verdict = "no gates" if not gates["budgets"] else ("all gates pass" if not gates["violations"] else f"{len(gates['violations'])} gate(s) FAIL")
    latency = s["latency"] or {}
    ratio = fmt(latency.get("latency_ratio")) + (f" (95% interval {fmt(latency['latency_ratio_low'])}-{fmt(latency['latency_ratio_high'])}: "
                                                 f"{speed_verdict(latency['latency_ratio_low'], latency['latency_ratio_high'])})"
                                                 if latency.get("latency_ratio_high") is not None else "")
    on = {"onnx": " (final ONNX)", "torch": " (torch)"}.get(s["quality_measured_on"], "")
    console.print(f"latency ratio {ratio}, quality drop{on} {fmt(s['quality_drop'])}, {verdict}; report: {out / 'report.md'}")


# The quality figures a table row has room for; report.json keeps all of them.
SHOWN_QUALITY = ("accuracy", "agreement", "cosine_mean", "cosine_min", "recall_at_10")


def _quality(stats: dict) -> str:
    quality = stats.get("quality", {})
    shown = [k for k in SHOWN_QUALITY if k in quality][:3]
    return ", ".join(f"{k} {fmt(quality[k])}" for k in shown) or "-"


def _figures(figures: dict) -> str:
    keep = ("exporter", "opset", "mode", "onnx_bytes", "parity_max_abs_diff", "int8_agreement", "int8_cosine_mean",
            "int8_latency_ratio", "p50_ms", "p90_ms", "latency_ratio", "stopped", "best_step", "validation_best", "loss_end")
    return ", ".join(f"{k} {fmt(figures[k])}" for k in keep if k in figures)


def _pass_command(name: str) -> click.Command:
    spec = PASSES[name]

    def callback(**options: object):
        from compress.recipe import make_step

        return make_step(name, given(options))

    return click.Command(name, callback=callback, params=config_options(spec.config), help=spec.summary)


for _name in PASSES:
    run.add_command(_pass_command(_name))
