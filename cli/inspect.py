"""`compress inspect MODEL` (params, MACs, size, layers) and `compress passes` (each pass and its options)."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import load_model, model_options
from compress.cli.render import echo_json, stdout, table


@click.command("inspect")
@click.argument("model_spec", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--groups", "groups", is_flag=True, help="List the prunable groups: width and what removing a unit touches.")
@model_options
def inspect_command(model_spec, as_json, groups, weights, input_shapes, seq_len, task, trust_pickle, output_name) -> None:
    """Params, MACs, size and the layer table of a model (torch spec or ONNX file)."""
    from compress.measure.inspect import inspect_model, inspect_onnx

    if groups:
        _print_groups(model_spec, load_model(model_spec, weights, input_shapes, seq_len, task, trust_pickle, output_name), as_json)
        return
    if model_spec.lower().endswith(".onnx"):
        info = inspect_onnx(Path(model_spec))
        columns = ["op type", "count"]
        rows = [[op, n] for op, n in info["op_counts"].items()]
    else:
        info = inspect_model(load_model(model_spec, weights, input_shapes, seq_len, task, trust_pickle, output_name))
        columns = ["layer", "type", "params", "output shape"]
        rows = [[layer["name"], layer["type"], layer["params"], layer["output_shape"]] for layer in info["layers"]]
    if as_json:
        echo_json(info)
        return
    console = stdout()
    summary = {k: v for k, v in info.items() if k not in ("layers", "op_counts")}
    console.print(table(f"inspect {model_spec}", ["figure", "value"], [[k, v] for k, v in summary.items()]))
    console.print(table("layers" if columns[0] == "layer" else "operators", columns, rows))


def _print_groups(model_spec: str, model, as_json: bool) -> None:
    from compress.pruning.plan import pruner_for

    pruner = pruner_for(model, ())
    found = pruner.groups
    if as_json:
        echo_json({"model": model.name, "kind": pruner.kind,
                   "groups": [{"name": g.name, "width": g.width, "touches": list(g.touches), "operations": list(g.operations)} for g in found]})
        return
    rows = [[g.name, g.width, "; ".join(g.touches), ", ".join(g.operations) or "-"] for g in found]
    stdout().print(table(f"prunable groups of {model_spec} ({pruner.kind}, {len(found)} groups)", ["group", "width", "removing a unit touches", "operations"], rows))


@click.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print each pass's JSON schema.")
def passes_command(as_json: bool) -> None:
    """List the passes and their options (the same names work in recipes and on the command line)."""
    from compress.passes import PASSES

    if as_json:
        echo_json({name: p.config.model_json_schema() for name, p in PASSES.items()})
        return
    console = stdout()
    for name, p in PASSES.items():
        rows = [[f"--{field.replace('_', '-')}", str(info.default), info.description or ""] for field, info in p.config.model_fields.items()]
        contract = f"needs {' + '.join(sorted(p.needs)) or 'nothing'}; gives {', '.join(sorted(p.gives)) or 'nothing'}; changes {p.changes}"
        console.print(table(f"{name}: {p.summary} ({contract})", ["option", "default", "meaning"], rows))
