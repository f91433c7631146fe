"""`compress eval MODEL --data SPEC [--reference ORIGINAL]`: quality of a torch model or ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import load_model, model_options
from compress.cli.render import echo_json, stdout, table


@click.command("eval")
@click.argument("model_spec", metavar="MODEL")
@click.option("--data", "data_spec", required=True, help="digits:test, digits:train, text:heldout, text:train, text:FILE (one sentence per line), images:DIR (class subfolders for labels) or tensors:FILE (.safetensors / .npz named by the model's inputs, optional labels).")
@click.option("--reference", default=None, help="The original model (torch spec or ONNX) to measure fidelity against; text data needs a torch text model here or as MODEL.")
@click.option("--json", "as_json", is_flag=True, help="Print flat JSON (accuracy, agreement, cosine_mean, ...).")
@model_options
def eval_command(model_spec, data_spec, reference, as_json, weights, input_shapes, seq_len, task, trust_pickle, output_name) -> None:
    """Measure MODEL's quality on a data spec, optionally against a reference model."""
    from compress.data.specs import load_data
    from compress.measure.evaluate import evaluate

    def resolve(spec: str, with_weights: bool):
        if spec.lower().endswith(".onnx"):
            return Path(spec)
        return load_model(spec, weights if with_weights else None, input_shapes, seq_len, task, trust_pickle, output_name)

    candidate = resolve(model_spec, True)
    # The same spec as MODEL (and no --weights to tell them apart) is the same model: load it once.
    same = reference == model_spec and weights is None
    ref = None if reference is None else (candidate if same else resolve(reference, False))
    torch_model = next((m for m in (candidate, ref) if not isinstance(m, Path) and m is not None), None)
    data = load_data(data_spec, torch_model, seq_len)
    kind = task or (torch_model.task if torch_model is not None else ("embedding" if data_spec.startswith("text:") else "classification"))
    figures = evaluate(candidate, data, kind, ref)
    if as_json:
        echo_json(figures)
        return
    stdout().print(table(f"eval {model_spec} on {data_spec}", ["metric", "value"], [[k, v] for k, v in figures.items()]))
