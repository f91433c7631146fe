"""The `distill` pass: recover a compressed model by knowledge distillation from the original.

The student is a copy of the current model; the teacher is the run's frozen original
(`ctx.teacher`). Training runs on the pass's own `--data` through the one `fit` loop, with the KD
losses of `compress.distill.losses`; a seeded share of that data, held aside and never trained on,
measures fidelity to the original every `eval_every` steps and picks the best state. The held-out
data the run reports quality on picks nothing. The KD curve is saved as `kd_curve.png` in the run folder.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from compress.config import StrictConfig
from compress.context import Context, Result
from compress.passes.synthesize import SYNTHETIC, training_data

if TYPE_CHECKING:  # torch comes with these; the PASSES table imports this module and must stay light
    import torch

    from compress.data.specs import Dataset
    from compress.model import Model
    from compress.train import Evaluate

CURVE_FILE = "kd_curve.png"
# Default peak learning rates, measured (benchmarks/README.md, "Distillation"): a pruned digits
# ResNet recovers to 359-360/360 in 150 steps at 2e-3; a pruned MiniLM gained more at 5e-4 than at
# 2e-4 (pretrained Transformer weights take a rate a few times lower than a CNN's).
CNN_LR = 2e-3
TRANSFORMER_LR = 5e-4
# Default schedules (benchmarks/README.md "Distillation" and "Levers"): on digits:train 150 steps of
# 32 recover 359-360/360; on a synthetic set of 128 images, 200 steps of 64 lost 3 more test images
# than 400 did (0.9833 against 0.9917), so data-free KD gets 400 steps of 64.
REAL_STEPS, SYNTHETIC_STEPS = 150, 400
BATCH_SIZE, SYNTHETIC_IMAGE_BATCH_SIZE = 32, 64


# The weights of the attention and relational terms (compress.distill.losses), by config field.
LOSS_WEIGHTS = ("attention", "value_relation", "attention_output", "rkd_distance", "rkd_angle")


class DistillConfig(StrictConfig):
    data: str | None = Field(None, description="training data: `synthetic` (data-free: the set of an earlier synthesize step, else one made now with synthesize's defaults) or a spec such as digits:train or text:train (never the held-out data); default synthetic")
    steps: int | None = Field(None, ge=1, le=1_000_000, description=f"optimizer steps (default {REAL_STEPS} on real data, {SYNTHETIC_STEPS} on a synthetic set: a few hundred distinct inputs need more passes)")
    lr: float | None = Field(None, gt=0, le=1, description=f"peak AdamW learning rate, after warm-up, decayed by a cosine to a tenth of it (default {CNN_LR:g}, or {TRANSFORMER_LR:g} for Transformer encoders)")
    batch_size: int | None = Field(None, ge=2, le=65536, description=f"training inputs per step (default {BATCH_SIZE}, or {SYNTHETIC_IMAGE_BATCH_SIZE} on synthetic images)")
    warmup_steps: int = Field(20, ge=0, description="steps of linear learning-rate warm-up (capped at steps)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, ge=0, description="largest global gradient norm (0: no clipping)")
    temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of the logit KL (classifiers)")
    kl: float = Field(1.0, ge=0, description="weight of the output term: logit KL x T^2 for classifiers, 1 - cosine of the embeddings for encoders")
    # On by default where labels exist (the "CE where labels exist"): on digits, KL + CE kept
    # 359/360 where KL alone kept 358 (benchmarks/README.md). Synthetic sets carry no labels, so
    # data-free KD is the logit KL alone whatever this says.
    ce: float = Field(1.0, ge=0, description="weight of cross-entropy on the data's labels where it has them (classifiers on labelled real data: digits:train, class folders, tensors with labels; synthetic sets and text have none)")
    hidden: float = Field(0.0, ge=0, description="weight of the Transformer hidden-state MSE (student layer i to teacher layer i*L_t/L_s; a learned projection where widths differ)")
    attention: float = Field(0.0, ge=0, description="weight of MiniLM's attention-map KL: softmax(QK^T / sqrt(d)) of student vs teacher over the real tokens (Transformer encoders)")
    value_relation: float = Field(0.0, ge=0, description="weight of MiniLM's value-relation KL: softmax(VV^T / sqrt(d)) of student vs teacher (Transformer encoders)")
    attention_output: float = Field(0.0, ge=0, description="weight of the MSE between the attention blocks' outputs over the real tokens (Transformer encoders; equal hidden widths)")
    relation_layers: Literal["last", "map"] = Field("last", description="layers the attention terms read: the last student and teacher layers (MiniLM), or every student layer i to teacher layer i*L_t/L_s")
    relation_heads: int | None = Field(None, ge=1, le=1024, description="MiniLMv2 relation heads: concatenate each layer's heads and re-split into this many (must divide the query widths); default: the models' own heads, averaged over heads when the counts differ")
    rkd_distance: float = Field(0.0, ge=0, description="weight of RKD's distance term: Huber loss between the batch's normalised pairwise output distances (mdistiller uses 25)")
    rkd_angle: float = Field(0.0, ge=0, description="weight of RKD's angle term: Huber loss between the angles of output triplets (mdistiller uses 50)")
    eval_every: int = Field(50, ge=0, description="steps between validation evaluations and progress lines; the best validation state is kept (0: no evaluation, the last state is kept)")
    validation_fraction: float | None = Field(None, ge=0, lt=1, description="share of the training data held aside, never trained on, to pick the best state by fidelity to the original (the held-out data quality is reported on never picks anything); default 0.1 on real data and 0 on a synthetic set, whose few hundred inputs all train: the last state is kept and the KD curve follows the fidelity on the run's held-out data, which picks nothing; 0: train on all of it and keep the last state")
    shift_px: float | None = Field(None, ge=0, le=64, description="images: random sub-pixel shift of each training input by up to this many pixels (default: 2 on synthetic data, 0 on real data)")
    flip: bool = Field(False, description="images: random horizontal flips of the training inputs (off for digits and text-like images)")
    mix: float = Field(0.0, ge=0, le=1, description="images: share of each batch blended with another input of the batch, the teacher labelling the blend")
    token_mask: float = Field(0.0, ge=0, lt=1, description="text: share of each training sentence's real tokens replaced by the mask token each step, the teacher labelling the masked sentence (more distinct inputs from a small corpus)")
    dropout: bool = Field(True, description="keep the student's dropout layers active while it trains (off: the student learns the teacher's deterministic function)")
    group_by_length: bool = Field(False, description="text: batches of sentences of similar length (shuffled chunks sorted by length), so each batch carries little padding: about twice as fast on short sentences")


    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        weights = ("kl", "ce", "hidden", *LOSS_WEIGHTS)
        if not any(getattr(self, name) > 0 for name in weights):
            raise ValueError(f"the loss weights {', '.join(weights)} are all 0; give at least one a positive weight")
        return self


def distill(model: Model, config: DistillConfig, ctx: Context) -> Result:
    import torch  # torch and the training code: imported when the step runs, not with PASSES

    from compress.distill.layers import transformer_layers
    from compress.distill.losses import KDLoss, KDWeights
    from compress.reporting.plot import kd_curve_plot
    from compress.train import FitConfig, fit

    train, synthesized = training_data(model, config.data, "distill", ctx)
    student = model.copy()
    student.module.requires_grad_(True)  # every weight of the student trains, whatever its input froze
    teacher = ctx.teacher.module if torch.device(ctx.device).type == "cpu" else copy.deepcopy(ctx.teacher.module).to(ctx.device)
    loss = KDLoss(
        teacher, student.module, task=model.task, temperature=config.temperature,
        weights=KDWeights(kl=config.kl, ce=config.ce, hidden=config.hidden, **{name: getattr(config, name) for name in LOSS_WEIGHTS}),
        example_inputs=model.example_inputs, relation_layers=config.relation_layers, relation_heads=config.relation_heads,
    )
    lr = config.lr or (TRANSFORMER_LR if transformer_layers(student.module) else CNN_LR)
    synthetic, images = config.data in (None, SYNTHETIC), _takes_images(model)
    steps, batch_size = schedule(config, synthetic, images)
    augmentation = _augmentation(config, model, synthetic and images)
    if augmentation.active:
        from compress.distill.augment import Augmented

        loss = Augmented(loss, augmentation)
    if config.token_mask > 0:
        from compress.distill.tokens import MaskedTokens

        loss = MaskedTokens(loss, config.token_mask, model.input_names, model.tokenizer)
    fit_config = FitConfig(
        steps=steps, lr=lr, batch_size=batch_size, warmup_steps=min(config.warmup_steps, steps),
        weight_decay=config.weight_decay, grad_clip=config.grad_clip, eval_every=config.eval_every,
    )
    train, validation = _split_validation(train, config, ctx.seed, synthetic)
    # Without a held-aside slice, a data-free run still draws its KD curve: fidelity on the held-out
    # data, watched and never used to pick a state (the last one is kept).
    watched = validation is None and synthetic and config.eval_every > 0 and ctx.heldout is not None
    if watched:
        fit_config = replace(fit_config, keep_best=False)
    if config.group_by_length and getattr(train, "mask_input", None) is not None:
        from compress.data.specs import LengthGrouped

        train = LengthGrouped(train)
    curve_data = validation if validation is not None else ctx.heldout if watched else None
    metric_name, evaluate = _validation(model, ctx, curve_data) if curve_data is not None else (None, None)
    ctx.log(f"distill: {steps} steps on {train.name} ({len(train)} inputs), batch {batch_size}, lr {lr:g}"
            + (f", augmented ({augmentation})" if augmentation.active else "")
            + (f", best state by {metric_name} on {len(validation)} inputs held aside from it" if validation is not None else "")
            + (f", last state kept ({metric_name} on the held-out {curve_data.name} drawn, picking nothing)" if watched else ""))
    with _dropout(student.module, config.dropout):
        result = fit(student.module, loss, train, fit_config, evaluate=evaluate, log=ctx.log, seed=ctx.seed, device=ctx.device,
                     checkpointing=ctx.checkpointing)
    student.module.to("cpu").eval()
    curve = kd_curve_plot(result.history, ctx.run_dir / CURVE_FILE, metric_name)
    figures = {
        "steps": result.steps,
        "batch_size": batch_size,
        "lr": lr,
        "best_step": result.best_step,
        "validation_metric": metric_name if validation is not None else None,
        "validation_samples": 0 if validation is None else len(validation),
        "validation_start": result.history[0].metric if validation is not None else None,
        "validation_best": result.best_metric if validation is not None else None,
        "validation_final": result.final_metric if validation is not None else None,
        "loss_start": result.loss_start,
        "loss_end": result.loss_end,
        "fit_seconds": round(result.seconds, 3),
        "data": train.name,
    }
    if watched:  # the curve's figures: drawn on the held-out data, picking nothing
        figures |= {"heldout_curve_metric": metric_name, "heldout_curve_start": result.history[0].metric,
                    "heldout_curve_final": result.final_metric}
    artifacts = {"kd_curve": curve}
    if synthesized is None:
        return Result(student, figures, artifacts)
    # Made here (no synthesize step before): its figures and files too, and the set for later steps.
    figures.update({f"synthetic_{k}": v for k, v in synthesized.figures.items()})
    return Result(student, figures, {**artifacts, **synthesized.artifacts}, data=synthesized.data)


def schedule(config: DistillConfig, synthetic: bool, images: bool) -> tuple[int, int]:
    """Steps and batch size: the config's, else the defaults for the kind of data."""
    steps = config.steps or (SYNTHETIC_STEPS if synthetic else REAL_STEPS)
    return steps, config.batch_size or (SYNTHETIC_IMAGE_BATCH_SIZE if synthetic and images else BATCH_SIZE)


def _takes_images(model: Model) -> bool:
    inputs = model.example_inputs
    return len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].is_floating_point()


def _augmentation(config: DistillConfig, model: Model, synthetic_images: bool):
    """Shifts default on for synthetic images (a few hundred of them; plain DeepInversion's KD used
    them too) and off for real data and token sequences; mixing is off unless asked: on digits it
    changed nothing (benchmarks/README.md)."""
    from compress.distill.augment import ImageAugmentation, check_images

    shift = config.shift_px if config.shift_px is not None else (SYNTHETIC_SHIFT_PX if synthetic_images else 0.0)
    augmentation = ImageAugmentation(shift_px=shift, flip=config.flip, mix=config.mix)
    if augmentation.active:
        check_images(model.example_inputs, "distill augmentation (--shift-px, --flip, --mix)")
    return augmentation


SYNTHETIC_SHIFT_PX = 2.0


@contextlib.contextmanager
def _dropout(module: torch.nn.Module, active: bool) -> Iterator[None]:
    """Dropout rates set to 0 while the student trains when `active` is false, and restored after,
    so the returned model's training behaviour is the one its config describes."""
    import torch

    layers = [] if active else [m for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    rates = [layer.p for layer in layers]
    for layer in layers:
        layer.p = 0.0
    try:
        yield
    finally:
        for layer, rate in zip(layers, rates):
            layer.p = rate


def _split_validation(train: Dataset, config: DistillConfig, seed: int, synthetic: bool) -> tuple[Dataset, Dataset | None]:
    """(what is trained on, what picks the best state): a seeded share of the training data held
    aside. Selecting on the held-out data would make the reported quality a chosen one. A synthetic
    set is not split by default: a tenth of 128 images is too few to pick by (steps of 8 points) and
    costs the training set (0.9833 on digits with the split, 0.9917 without; benchmarks/README.md)."""
    import torch

    fraction = config.validation_fraction if config.validation_fraction is not None else (0.0 if synthetic else 0.1)
    held_aside = int(len(train) * fraction)
    if not config.eval_every or held_aside == 0:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.take(order[held_aside:]), train.take(order[:held_aside])


def _validation(model: Model, ctx: Context, validation: Dataset) -> tuple[str, Evaluate]:
    """Fidelity to the original on the held-aside slice: agreement for classifiers (the data may be
    synthetic, without labels), cosine for encoders; as a function of the student's module."""
    from compress.metrics import primary_metric, quality
    from compress.predict import torch_outputs

    name = primary_metric(model.task, False)
    reference = torch_outputs(ctx.teacher, validation)

    def evaluate(module: torch.nn.Module) -> float:
        outputs = torch_outputs(model.replace(module=module), validation)
        return quality(model.task, outputs, reference, None)[name]

    return name, evaluate
