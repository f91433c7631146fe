"""Make or reuse the synthetic set for a teacher: from a given file, the cache, or a fresh BN
inversion (compress/distill/synthetic.py); write it into the run folder (`synthetic.safetensors`)
with two pictures: `synthetic_samples.png` (an image grid by teacher class) and
`synthetic_bn.png` (BN-statistics error per layer and class coverage). The `synthesize` pass and
`compress synthesize` both call `make_set`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from compress.distill.settings import InversionSettings
from compress.distill.synthetic import has_batchnorm, invert
from compress.distill.synthetic_set import SET_FILE, SyntheticSet, cache_key, cached, read_set, store, write_set
from compress.errors import UsageError
from compress.model import Model
from compress.reporting.digest import state_sha256
from compress.reporting.synthetic_plot import inversion_plot, sample_grid

SAMPLES_PNG, BN_PNG = "synthetic_samples.png", "synthetic_bn.png"


def set_artifacts(run_dir: Path) -> dict[str, Path]:
    return {"synthetic": run_dir / SET_FILE, "synthetic_samples": run_dir / SAMPLES_PNG, "synthetic_bn": run_dir / BN_PNG}


def make_set(
    teacher: Model,
    settings: InversionSettings,
    run_dir: Path,
    *,
    set_file: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
    student: nn.Module | None = None,
) -> SyntheticSet:
    """The synthetic set for `teacher` (from `set_file`, the cache, or a fresh inversion), written
    into `run_dir` with its two pictures. The pass and `compress synthesize` both call this."""
    input_shape = image_input_shape(teacher)
    teacher_sha = state_sha256(teacher.module)
    if set_file is not None:
        made = read_set(set_file, teacher_sha)
        log(f"synthesize: using {len(made.inputs[0])} inputs from {set_file}")
        made = SyntheticSet(**{**made.__dict__, "figures": {**made.figures, "reused": True}})
    else:
        made = _cached_or_new(teacher, settings, input_shape, teacher_sha, seed, log, student)
    write_set(made, run_dir / SET_FILE)
    _plots(made, teacher, run_dir)
    return made


def image_input_shape(teacher: Model) -> tuple[int, ...]:
    """The teacher's one input as (channels, height, width); BN inversion needs BatchNorm layers
    and an image input, so anything else is refused here, before any work."""
    if not has_batchnorm(teacher.module):
        raise UsageError("synthesize", teacher.name, "BN inversion needs BatchNorm layers and this model has none, and it is not a text "
                         "encoder (input_ids, attention_mask) for token sequences; distill from real data instead (distill --data images:DIR or tensors:FILE)")
    inputs = teacher.example_inputs
    if len(inputs) != 1 or inputs[0].dim() != 4 or not inputs[0].is_floating_point():
        shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in inputs)
        raise UsageError("synthesize input", shapes, "BN inversion makes images: the model must take one float [N, C, H, W] input; "
                         "distill from real data instead (distill --data ...)")
    if teacher.task != "classification":
        raise UsageError("synthesize task", teacher.task, "BN inversion samples target classes, so it needs a classifier; distill from real data instead")
    return tuple(inputs[0].shape[1:])


def _cached_or_new(teacher, settings, input_shape, teacher_sha, seed, log, student) -> SyntheticSet:
    dumped = settings.model_dump()
    key = cache_key(teacher_sha, seed, dumped, input_shape)
    hit = cached(key, teacher_sha)
    if hit is not None and student is None:
        log(f"synthesize: reusing cached set {key} ({len(hit.inputs[0])} inputs)")
        return SyntheticSet(**{**hit.__dict__, "figures": {**hit.figures, "reused": True}})
    log(f"synthesize: inverting {teacher.name} into {settings.images} inputs of shape {list(input_shape)}")
    started = time.perf_counter()
    inverted = invert(teacher.module, input_shape, settings, seed=seed, student=student, log=log)
    seconds = time.perf_counter() - started
    made = SyntheticSet((inverted.images,), inverted.targets, teacher_sha, seed, dumped, input_shape,
                        _figures(inverted, teacher.module, seconds))
    # A set shaped by ADI depends on the student too, which the key does not hold: not cached.
    if student is None:
        store(made)
    return made


@torch.no_grad()
def _figures(inverted, teacher: nn.Module, seconds: float) -> dict:
    """BN-statistics error per layer and class coverage, as the teacher sees the final inputs."""
    logits = torch.cat([teacher.eval()(chunk) for chunk in inverted.images.split(256)])
    predicted = logits.argmax(dim=1)
    classes = logits.shape[1]
    counts = torch.bincount(predicted, minlength=classes)
    return {
        "images": len(inverted.images),
        "seconds_inversion": round(seconds, 3),
        "reused": False,
        "bn_loss_before": inverted.bn_loss_before,
        "bn_loss_after": inverted.bn_loss_after,
        "bn_layers": list(inverted.layer_names),
        "bn_mean_error_before": list(inverted.mean_error_before),
        "bn_mean_error_after": list(inverted.mean_error_after),
        "bn_var_error_before": list(inverted.var_error_before),
        "bn_var_error_after": list(inverted.var_error_after),
        "target_hit_rate": (predicted == inverted.targets).double().mean().item(),
        "teacher_confidence_mean": logits.softmax(dim=1).max(dim=1).values.mean().item(),
        "classes_covered": int((counts > 0).sum()),
        "classes": classes,
        "class_counts": counts.tolist(),
        # 1.0 when every class has its share; 0 when one class is missing.
        "class_balance_min": (counts.min() / counts.double().mean()).item(),
    }


def _plots(made: SyntheticSet, teacher: Model, run_dir: Path) -> None:
    with torch.no_grad():
        predicted = torch.cat([teacher.module.eval()(chunk) for chunk in made.inputs[0].split(256)]).argmax(dim=1)
    sample_grid(made.inputs[0], predicted, run_dir / SAMPLES_PNG)
    figures = made.figures
    errors = {label: figures[key] for label, key in (("mean, noise", "bn_mean_error_before"), ("var, noise", "bn_var_error_before"),
                                                     ("mean, synthetic", "bn_mean_error_after"), ("var, synthetic", "bn_var_error_after"))}
    inversion_plot(figures["bn_layers"], errors, figures["class_counts"], run_dir / BN_PNG)
