"""`compress synthesize --model M --out DIR`: the `synthesize` pass on its own, writing the synthetic
set (`synthetic.safetensors`) and its pictures (or decoded sample sequences) into DIR; a later run reuses it with
`synthesize --set-file DIR/synthetic.safetensors` (or finds it in the cache)."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import config_options, given, load_model, model_options
from compress.cli.render import echo_json, fmt, progress_logger, stdout, table
from compress.passes.synthesize import SynthesizeConfig

# Per-layer figures are too long for a table row; --json gives them all.
PER_LAYER = ("bn_layers", "bn_mean_error_before", "bn_mean_error_after", "bn_var_error_before", "bn_var_error_after")


@click.command("synthesize")
@click.option("--model", "model_spec", required=True, help="The teacher: bundled name (digits), pkg.module:factory, HF folder or saved compress folder.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for synthetic.safetensors and its pictures.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the starting noise and the target classes.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of a table.")
@model_options
def synthesize_command(model_spec, out, seed, as_json, weights, input_shapes, seq_len, task, trust_pickle, **options) -> None:
    """Make a synthetic input set for data-free distillation: BN inversion of a BatchNorm classifier,
    or token sequences for a text encoder."""
    from compress.atomic import ensure_writable_dir
    from compress.config import build_config
    from compress.passes.synthesize import make_synthetic

    config = build_config(SynthesizeConfig, given(options), "synthesize")
    out = ensure_writable_dir(out)
    teacher = load_model(model_spec, weights, input_shapes, seq_len, task, trust_pickle)
    made, artifacts = make_synthetic(teacher, config, out, seed=seed, log=progress_logger())
    files = {name: str(path) for name, path in artifacts.items()}
    if as_json:
        echo_json({"figures": made.figures, "teacher_sha256": made.teacher_sha256, "seed": made.seed,
                   "settings": made.settings, "files": files})
        return
    figures = made.figures
    rows = [[k, v] for k, v in figures.items() if k not in PER_LAYER]
    if "bn_mean_error_after" in figures:  # BN inversion; token sequences have no BN layers
        rows += [["worst layer mean error", max(figures["bn_mean_error_after"], default=None)],
                 ["worst layer var error", max(figures["bn_var_error_after"], default=None)]]
    console = stdout()
    console.print(table(f"compress synthesize: {teacher.name} -> {Path(files['synthetic'])}", ["figure", "value"], [[k, fmt(v)] for k, v in rows]))
    console.print(f"samples: {files['synthetic_samples']}"
                  + (f"; BN-statistics error per layer and class coverage: {files['synthetic_bn']}" if "synthetic_bn" in files else ""))


synthesize_command.params.extend(config_options(SynthesizeConfig))
