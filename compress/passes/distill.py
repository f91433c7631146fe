"""The `distill` pass: recover a compressed model by knowledge distillation from the original.

The student is a copy of the current model; the teacher is the run's frozen original
(`ctx.teacher`). Training runs on the pass's own `--data` through the one `fit` loop, with the KD
losses of `compress.distill.losses`; the held-out data measures quality every `eval_every` steps
and the best state is kept. The KD curve is saved as `kd_curve.png` in the run folder.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from compress.config import StrictConfig
from compress.context import Context, Result

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


class DistillConfig(StrictConfig):
    data: str | None = Field(None, description="training data: `synthetic` (data-free: the set of an earlier synthesize step, else one made now with synthesize's defaults) or a spec such as digits:train or text:train (never the held-out data); default synthetic")
    steps: int = Field(150, ge=1, le=1_000_000, description="optimizer steps")
    lr: float | None = Field(None, gt=0, le=1, description=f"peak AdamW learning rate, after warm-up, decayed by a cosine to a tenth of it (default {CNN_LR:g}, or {TRANSFORMER_LR:g} for Transformer encoders)")
    batch_size: int = Field(32, ge=2, le=65536, description="training inputs per step")
    warmup_steps: int = Field(20, ge=0, description="steps of linear learning-rate warm-up (capped at steps)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, ge=0, description="largest global gradient norm (0: no clipping)")
    temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of the logit KL (classifiers)")
    kl: float = Field(1.0, ge=0, description="weight of the output term: logit KL x T^2 for classifiers, 1 - cosine of the embeddings for encoders")
    ce: float = Field(0.0, ge=0, description="weight of cross-entropy on the data's labels (classifiers; ignored without labels)")
    hidden: float = Field(0.0, ge=0, description="weight of the Transformer hidden-state MSE (student layer i to teacher layer i*L_t/L_s; a learned projection where widths differ)")
    eval_every: int = Field(50, ge=0, description="steps between held-out evaluations and progress lines; the best held-out state is kept (0: no evaluation, the last state is kept)")
    shift_px: float | None = Field(None, ge=0, le=64, description="images: random sub-pixel shift of each training input by up to this many pixels (default: 2 on synthetic data, 0 on real data)")
    flip: bool = Field(False, description="images: random horizontal flips of the training inputs (off for digits and text-like images)")
    mix: float = Field(0.0, ge=0, le=1, description="images: share of each batch blended with another input of the batch, the teacher labelling the blend")


    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        if self.kl == self.ce == self.hidden == 0:
            raise ValueError("the loss weights kl, ce and hidden are all 0; give at least one a positive weight")
        return self


def distill(model: Model, config: DistillConfig, ctx: Context) -> Result:
    import torch  # torch and the training code: imported when the step runs, not with PASSES

    from compress.distill.layers import transformer_layers
    from compress.distill.losses import KDLoss, KDWeights
    from compress.reporting.plot import kd_curve_plot
    from compress.train import FitConfig, fit

    train, synthesized = _training_data(model, config, ctx)
    student = model.copy()
    student.module.requires_grad_(True)  # every weight of the student trains, whatever its input froze
    teacher = ctx.teacher.module if torch.device(ctx.device).type == "cpu" else copy.deepcopy(ctx.teacher.module).to(ctx.device)
    loss = KDLoss(
        teacher, student.module, task=model.task, temperature=config.temperature,
        weights=KDWeights(kl=config.kl, ce=config.ce, hidden=config.hidden), example_inputs=model.example_inputs,
    )
    lr = config.lr or (TRANSFORMER_LR if transformer_layers(student.module) else CNN_LR)
    augmentation = _augmentation(config, model, synthetic=config.data in (None, SYNTHETIC))
    if augmentation.active:
        from compress.distill.augment import Augmented

        loss = Augmented(loss, augmentation)
    fit_config = FitConfig(
        steps=config.steps, lr=lr, batch_size=config.batch_size, warmup_steps=min(config.warmup_steps, config.steps),
        weight_decay=config.weight_decay, grad_clip=config.grad_clip, eval_every=config.eval_every,
    )
    metric_name, evaluate = _heldout_evaluation(model, ctx) if config.eval_every else (None, None)
    ctx.log(f"distill: {config.steps} steps on {train.name} ({len(train)} inputs), batch {config.batch_size}, lr {lr:g}"
            + (f", augmented ({augmentation})" if augmentation.active else "")
            + (f", best state by held-out {metric_name}" if metric_name else ""))
    result = fit(student.module, loss, train, fit_config, evaluate=evaluate, log=ctx.log, seed=ctx.seed, device=ctx.device)
    student.module.to("cpu").eval()
    curve = kd_curve_plot(result.history, ctx.run_dir / CURVE_FILE, metric_name)
    figures = {
        "steps": result.steps,
        "lr": lr,
        "best_step": result.best_step,
        "heldout_metric": metric_name,
        "heldout_start": result.history[0].metric if metric_name else None,
        "heldout_best": result.best_metric,
        "heldout_final": result.final_metric,
        "loss_start": result.loss_start,
        "loss_end": result.loss_end,
        "fit_seconds": round(result.seconds, 3),
        "data": train.name,
    }
    artifacts = {"kd_curve": curve}
    if synthesized is not None:  # made here (no synthesize step before): its figures and files too
        figures.update({f"synthetic_{k}": v for k, v in synthesized.figures.items()})
        artifacts.update(synthesized.artifacts)
    return Result(student, figures, artifacts)


SYNTHETIC = "synthetic"


def _training_data(model: Model, config: DistillConfig, ctx: Context) -> tuple[Dataset, Result | None]:
    """The pass's own --data; data-free (`synthetic`, the default) reads the run's synthetic set,
    and makes one with synthesize's defaults when no synthesize step ran before (returning that
    step's Result, so its figures and files are reported)."""
    if config.data is not None and config.data != SYNTHETIC:
        return ctx.dataset(config.data, "train"), None
    if SYNTHETIC in ctx.data:
        return ctx.data[SYNTHETIC], None
    from compress.passes.synthesize import SynthesizeConfig, synthesize

    ctx.log("distill: no synthetic set in this run yet: synthesizing one with synthesize's defaults (give --data for real data)")
    made = synthesize(model, SynthesizeConfig(), ctx)
    return made.data[SYNTHETIC], made


def _augmentation(config: DistillConfig, model: Model, synthetic: bool):
    """Shifts default on for synthetic data (a few hundred images; plain DeepInversion's KD used
    them too) and off for real data; mixing is off unless asked: on digits it changed nothing
    (benchmarks/README.md)."""
    from compress.distill.augment import ImageAugmentation, check_images

    shift = config.shift_px if config.shift_px is not None else (SYNTHETIC_SHIFT_PX if synthetic else 0.0)
    augmentation = ImageAugmentation(shift_px=shift, flip=config.flip, mix=config.mix)
    if augmentation.active:
        check_images(model.example_inputs, "distill augmentation (--shift-px, --flip, --mix)")
    return augmentation


SYNTHETIC_SHIFT_PX = 2.0


def _heldout_evaluation(model: Model, ctx: Context) -> tuple[str | None, Evaluate | None]:
    """The pipeline's own quality figure (accuracy with labels, else agreement or cosine to the
    original) on the held-out data, as a function of the student's module."""
    from compress.metrics import primary_metric, quality
    from compress.predict import torch_outputs

    heldout = ctx.heldout
    if heldout is None:
        return None, None
    name = primary_metric(model.task, heldout.labels is not None)
    reference = torch_outputs(ctx.teacher, heldout)

    def evaluate(module: torch.nn.Module) -> float:
        outputs = torch_outputs(model.replace(module=module), heldout)
        return quality(model.task, outputs, reference, heldout.labels)[name]

    return name, evaluate

