"""The `qat` pass: quantization-aware training with learned step sizes, driven by KD from the
float teacher through the one fit loop.

BatchNorm is folded into the convolutions first; every Conv2d / Linear not matched by `--ignore`
gets LSQ fake quantizers (weights per output channel at `--bits`, inputs per tensor at 8 bits),
initialised from calibration data (min/max or MSE); then the student trains against the teacher's
outputs, on the run's synthetic set unless `--data` names real data (data-free by default, as
`distill`). Text encoders, and any model whose Linear layers read token sequences (a ViT), quantize
only their Linear layers, inputs dynamically (one uint8 range per tensor per
call, as onnxruntime's dynamic MatMul does; the layers never reaching the output, such as BERT's
unused pooler, stay float). With `--intervention`, Teacher Intervention
(compress/quant/intervention.py) runs a first phase with the teacher's attention tensors
(Transformer encoders) or block inputs (CNNs) swapped in, then plain KD-QAT, the learning-rate
schedule restarting, as in the paper's two steps.
The result stays a torch model; `export` after it writes INT8 ONNX with the learned scales.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from compress.config import StrictConfig
from compress.context import Context, Result
from compress.errors import UsageError
from compress.passes.synthesize import SYNTHETIC, training_data
from compress.quant.history import mark_quantized, refuse_if_quantized
from compress.quant.options import Bits, Init

if TYPE_CHECKING:
    from torch import nn

    from compress.data.specs import Dataset
    from compress.model import Model
    from compress.quant.smooth import Group
    from compress.train import Evaluate, FitResult


# Default peak rates. Pretrained Transformer encoders take the Teacher Intervention paper's BERT
# rate: on MiniLM at 8 bits, 1e-4 lowered fidelity within 20 steps and 2e-5 held it (benchmarks/README.md).
CNN_LR = 1e-4
TRANSFORMER_LR = 2e-5


# SmoothQuant's migration strength for text encoders (dynamic uint8 inputs): benchmarks/README.md,
# "MiniLM W8A8", compares alpha values.
TEXT_SMOOTH_ALPHA = 0.7
# What smoothing an input must gain, in mean cosine per input channel, to pay for its Mul, whose
# cost grows with the input's width: 5e-5 on MiniLM's 384-wide inputs (each Mul about 12 us of a
# 22 ms batch-1 call), 2e-4 on its 1536-wide GELU outputs (35-120 us each). On MiniLM this drops
# the inputs whose gain was noise and four of the six GELU outputs (benchmarks/README.md).
SMOOTH_GAIN_PER_CHANNEL = 1.3e-7


class QatConfig(StrictConfig):
    bits: Bits = Field("8", description="weight bits: 8, 4, 3, 2 or ternary (2 and ternary share the grid {-1, 0, 1} x step; ternary starts from TWN's step); activations stay 8-bit")
    init: Init = Field("mse", description="how the steps start: the largest magnitude (minmax) or the clipping with the least squared error (mse)")
    ignore: tuple[str, ...] = Field((), description="glob of layer names to keep in float, e.g. 'head' or 'layer1.*'")
    data: str | None = Field(None, description="training and calibration data: `synthetic` (data-free: the set of an earlier synthesize or distill step, else one made now with synthesize's defaults) or a spec such as digits:train or text:train (never the held-out data); default synthetic")
    steps: int = Field(100, ge=0, le=1_000_000, description="optimizer steps of KD training (0: calibration only)")
    lr: float | None = Field(None, gt=0, le=1, description=f"peak AdamW learning rate (weights and steps); default {CNN_LR:g}, or {TRANSFORMER_LR:g} for Transformer encoders")
    batch_size: int = Field(32, ge=2, le=65536, description="training inputs per step")
    temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of the logit KL (classifiers)")
    calibration_samples: int = Field(256, ge=1, le=100_000, description="inputs that initialise the steps")
    smooth: float | None = Field(None, ge=0, le=1, description=f"SmoothQuant migration strength alpha for Linear inputs: 1/s on the input, s on the weight columns, s_j = max|X_j|^alpha / max|W_j|^(1-alpha) from the calibration inputs, max|X_j| floored at the median channel's (no quiet channel amplified); only the inputs where that measures enough better on them to pay for the extra Mul before each are smoothed; 0: off; default {TEXT_SMOOTH_ALPHA:g} for text encoders, off otherwise")
    keep_float: int = Field(0, ge=0, le=10_000, description="leave in float the N quantized layers whose quantization costs the most fidelity, each measured alone on the calibration inputs (mean cosine of the outputs to the float model's); on top of --ignore")
    hidden: float = Field(0.0, ge=0, description="weight of the Transformer hidden-state MSE to the teacher's layers, added to the output term (text encoders)")
    intervention: Literal["none", "o", "c", "m", "g", "block"] = Field("none", description="Teacher Intervention, for a student with the teacher's architecture, during a first phase. Transformer encoders: the float teacher's attention output (o), context (c) or attention probabilities (m) replace the student's in every layer; g: O, then C, then M (a sixth, a sixth, the rest). CNNs: block: every block (a ResNet's residual blocks) reads the teacher's output of the block before it, plus a per-block output MSE. Then plain KD-QAT")
    intervention_steps: int | None = Field(None, ge=1, description="steps of the intervention phase (default a quarter of --steps); the rest of --steps trains without intervention, the learning-rate schedule restarting")

    @model_validator(mode="after")
    def _phases(self) -> QatConfig:
        if self.intervention != "none" and self.intervention_steps is not None and self.intervention_steps >= self.steps:
            raise ValueError(f"intervention_steps {self.intervention_steps} leaves no intervention-free phase in {self.steps} steps; give fewer than --steps")
        return self

    @field_validator("bits", mode="before")
    @classmethod
    def _bits_as_text(cls, value: object) -> object:
        # A recipe says `bits: 8`; the grid names are text because of "ternary".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def qat(model: Model, config: QatConfig, ctx: Context) -> Result:
    from torch import nn

    from compress.data.specs import Dataset
    from compress.quant.calibration import text_inputs
    from compress.quant.edits import FAKE_QUANT, FOLD_BN, SMOOTH_INPUT
    from compress.quant.fake import quantizable_tables, wrap, wrap_tables
    from compress.quant.fold import conv_bn_pairs, fold
    from compress.quant.intervention import check_same_architecture
    from compress.quant.prepare import init_steps, probe, quantizable, reaching_output, reads_token_sequences
    from compress.quant.smooth import candidates as smoothing_candidates

    refuse_if_quantized(model, "qat", "quantize once; start again from the float model")
    if not quantizable(model.module, config.ignore):  # before the data: the model is the first thing wrong
        _no_layers(model, config)
    spec = config.data or SYNTHETIC
    if config.intervention != "none":
        check_same_architecture(ctx.teacher.module, model.module, config.intervention)
    data, synthesized = training_data(model, spec, "qat", ctx)
    student = model.copy()
    module = student.module
    pairs = conv_bn_pairs(module, model.example_inputs)
    fold(module, pairs)
    layers = reaching_output(module, quantizable(module, config.ignore), model.example_inputs)
    if not layers:
        _no_layers(model, config)
    # Transformers over tokens (text, or a ViT's patches) quantize their Linear inputs per call, as
    # onnxruntime's dynamic MatMul does: a static INT8 graph of one also quantizes the attention
    # scores and softmax, which no module produces, so no fake-quant model computes it (a tiny ViT:
    # agreement 0.84 to its INT8 graph). Dynamic INT8 has no Conv, so a patch embedding stays float.
    activations = "dynamic" if text_inputs(model.example_inputs) or reads_token_sequences(module, layers, model.example_inputs) else "static"
    if activations == "dynamic":
        layers = [name for name in layers if isinstance(module.get_submodule(name), nn.Linear)]
        if not layers:
            _no_layers(model, config)
    # Text sorted by length and each batch cut to its longest real sequence, as every inference over text.
    calibration = [Dataset(data.name, inputs) for _, inputs in data.head(config.calibration_samples).padded_batches(config.batch_size)]
    shared, signed, samples = probe(module, layers, calibration)
    alpha = config.smooth if config.smooth is not None else (TEXT_SMOOTH_ALPHA if activations == "dynamic" else 0.0)
    candidates = smoothing_candidates(module, layers, shared, calibration) if alpha else []
    wrap(module, layers, config.bits, shared, signed, activations)
    # Embedding tables (text encoders) go out as int8 with a scale per row: rounded here too, so
    # the torch model computes what the INT8 graph does (compress.quant.embeddings).
    tables = quantizable_tables(module, config.ignore)
    wrap_tables(module, tables)
    init_steps(module, samples, config.init, config.bits, seed=ctx.seed)
    smoothed = _smooth(student, model, candidates, alpha, config, data.head(config.calibration_samples), ctx)
    kept_float = _keep_float(student, model, config, data.head(config.calibration_samples), ctx)
    layers = [name for name in layers if name not in kept_float]
    if not layers:
        _no_layers(model, config)
    outputs, unmodelled = _place_outputs(student, shared, calibration, ctx) if activations == "static" else ({}, [])
    edits = ({"kind": FOLD_BN, "pairs": [list(p) for p in pairs]},) if pairs else ()
    edits += ({"kind": FAKE_QUANT, "bits": config.bits, "layers": layers, "shared": shared, "signed": signed, "data": spec,
               "activations": activations, "outputs": outputs, "tables": tables},)
    if smoothed:
        edits += ({"kind": SMOOTH_INPUT, "alpha": alpha, "modules": [[group.at, group.channels] for group in smoothed]},)
    student = student.replace(edits=(*student.edits, *edits))
    ctx.log(f"qat: {len(layers)} layers at {config.bits if config.bits == 'ternary' else config.bits + '-bit'} weights / 8-bit {activations} inputs, {len(pairs)} BatchNorms folded, "
            f"steps from {config.init} on {data.name}" + (f", Teacher Intervention {config.intervention}" if config.intervention != "none" else ""))
    figures = {"bits": config.bits, "activations": activations, "quantized_layers": len(layers),
               "smooth_alpha": alpha, "smoothed_inputs": ", ".join(group.at for group in smoothed) or "none",
               "float_layers": ", ".join((*config.ignore, *kept_float)) or "none",
               "folded_batchnorms": len(pairs), "shared_input_quantizers": len(shared) if activations == "static" else 0,
               "intervention": config.intervention, "data": data.name,
               "quantized_outputs": len(outputs), "unmodelled_int8_tensors": len(unmodelled),
               "int8_embedding_tables": ", ".join(tables) or "none"}
    if config.steps:
        figures |= train_qat(student.module, model, config, ctx, data)[0]
    module.eval()
    quantized = mark_quantized(student, **{"pass": "qat", "bits": config.bits})
    if synthesized is None:
        return Result(quantized, figures)
    # Made here (no earlier step made one): its figures and files too, and the set for later steps.
    figures.update({f"synthetic_{k}": v for k, v in synthesized.figures.items()})
    return Result(quantized, figures, synthesized.artifacts, data=synthesized.data)


def _smooth(student: Model, model: Model, candidates: list[Group], alpha: float, config: QatConfig, data: Dataset,
            ctx: Context) -> list[Group]:
    """Smooth the inputs where it pays: each group smoothed alone in the fake-quantized `student`,
    kept when that raises the outputs' mean cosine to the float model's on the calibration inputs
    by SMOOTH_GAIN_PER_CHANNEL per input channel or more; the kept ones are then applied together
    (in place)."""
    if not candidates:
        return []
    from compress.predict import torch_outputs
    from compress.quant.smooth import cosine_each_alone, mean_cosine, smooth_quantized

    ctx.log(f"qat: measuring SmoothQuant (alpha {alpha:g}) on each of {len(candidates)} Linear inputs alone, on {len(data)} calibration inputs")
    reference = torch_outputs(model, data)
    before = mean_cosine(student, data, reference)
    alone = cosine_each_alone(student, candidates, alpha, data, reference, config.init, config.bits)
    chosen = [group for group in candidates if alone[group.at] - before >= SMOOTH_GAIN_PER_CHANNEL * group.channels]
    ctx.log("qat: mean cosine with each input smoothed alone: " + ", ".join(f"{at} {cos:.5f}" for at, cos in alone.items()))
    for group in chosen:
        smooth_quantized(student.module, group, alpha, config.init, config.bits)
    after = mean_cosine(student, data, reference) if chosen else before
    ctx.log(f"qat: smoothed {len(chosen)} of {len(candidates)} inputs ({', '.join(g.at for g in chosen) or 'none'}): "
            f"calibration mean cosine {before:.5f} -> {after:.5f}")
    return chosen


def _keep_float(student: Model, model: Model, config: QatConfig, data: Dataset, ctx: Context) -> list[str]:
    """The --keep-float most sensitive layers, measured on the calibration inputs, put back in float."""
    if not config.keep_float:
        return []
    from compress.predict import torch_outputs
    from compress.quant.prepare import most_sensitive, unwrap

    ctx.log(f"qat: measuring what quantizing each layer costs on {len(data)} calibration inputs (--keep-float {config.keep_float})")
    kept = most_sensitive(student, torch_outputs(model, data), data, config.keep_float)
    unwrap(student.module, kept)
    ctx.log(f"qat: kept float: {', '.join(kept)}")
    return kept


def _place_outputs(student: Model, shared: dict[str, str], calibration: list[Dataset], ctx: Context) -> tuple[dict[str, dict], list[str]]:
    """Fake quantizers on the tensors between the layers that onnxruntime will quantize in the INT8
    export (compress/quant/placement.py), so QAT trains, and the torch model computes, what the
    INT8 graph does. A new quantizer starts from onnxruntime's calibrated range; one on a tensor a
    layer reads is that layer's own."""
    import torch

    from compress.quant.fake import output_quantizer, wrap_outputs
    from compress.quant.placement import plan_outputs
    from compress.quant.qdq_export import float_twin

    twin, layers = float_twin(student)
    plan, unmatched = plan_outputs(twin, layers, shared, calibration)
    wrap_outputs(student.module, plan)
    with torch.no_grad():
        for name, entry in plan.items():
            if entry["owner"] is None:  # uint8 range [(0 - z) s, (255 - z) s] onto our grid
                quant, scale, zero = output_quantizer(student.module, name), entry["scale"], 128 if entry["signed"] else 0
                quant.step.fill_(max(zero * scale / max(quant.q_n, 1), (255 - zero) * scale / quant.q_p) if entry["signed"] else scale)
    ctx.log(f"qat: {len(plan)} tensors between the layers fake-quantized as onnxruntime will quantize them"
            + (f"; {len(unmatched)} it quantizes come from no module and stay unmodelled: {', '.join(unmatched[:3])}" if unmatched else ""))
    return {name: {"owner": e["owner"], "signed": e["signed"], "tensors": e["tensors"]} for name, e in plan.items()}, unmatched


def _no_layers(model: Model, config: QatConfig) -> None:
    raise UsageError("model", model.name, "has no Conv2d or Linear layer (reaching its output) to quantize"
                     + (f" outside --ignore {list(config.ignore)}" if config.ignore else ""))


def train_qat(module: nn.Module, model: Model, config: QatConfig, ctx: Context, data: Dataset,
              evaluate: Evaluate | None = None, eval_every: int | None = None) -> tuple[dict, list[FitResult]]:
    """KD-QAT of the fake-quantized `module` through the one fit loop: with intervention, a first
    phase with the teacher's tensors swapped in, then the rest of the steps without (the schedule
    restarting, as the paper's code). Returns the figures and each phase's fit result;
    `evaluate`/`eval_every` are fit's (benchmarks/ti_minilm.py draws its curves with them)."""
    from dataclasses import replace

    from torch import nn

    from compress.distill.losses import KDLoss, KDWeights
    from compress.quant.fake import DynamicQuantizer
    from compress.quant.intervention import Intervened, attention_parts
    from compress.train import FitConfig, fit

    module.requires_grad_(True)
    # KD-QAT fits a copy that starts within a fraction of a percent of the teacher: dropout's noise
    # (0.1 in BERT) is far larger than the quantization error it learns from (benchmarks/README.md).
    for dropout in (m for m in module.modules() if isinstance(m, nn.Dropout)):
        dropout.p = 0.0
    loss = KDLoss(ctx.teacher.module, module, task=model.task, temperature=config.temperature,
                  weights=KDWeights(kl=1.0, hidden=config.hidden), example_inputs=model.example_inputs)
    first = 0
    if config.intervention != "none":
        first = config.intervention_steps or max(1, config.steps // 4)
    # Each phase is its own fit, so the intervention phase keeps its own checkpoint file.
    ti_checkpointing = None
    if ctx.checkpointing is not None:
        path = ctx.checkpointing.path
        ti_checkpointing = replace(ctx.checkpointing, path=path.with_name(f"{path.stem}.intervention{path.suffix}"))
    phases = [(first, Intervened(loss, ctx.teacher.module, config.intervention, first), ti_checkpointing),
              (config.steps - first, loss, ctx.checkpointing)]
    # Attention, not a list of layers: transformers' ResNet keeps its stages in a ModuleList too.
    # Dynamic inputs mark a Transformer over tokens too (DistilBERT's and ViT's attention are not named as BERT's).
    transformer = attention_parts(module) or any(isinstance(m, DynamicQuantizer) for m in module.modules())
    lr = config.lr or (TRANSFORMER_LR if transformer else CNN_LR)
    figures: dict = {"intervention_steps": first, "lr": lr}
    results: list[FitResult] = []
    seconds = 0.0
    for steps, phase_loss, checkpointing in (phase for phase in phases if phase[0] > 0):
        fit_config = FitConfig(steps=steps, lr=lr, batch_size=config.batch_size,
                               warmup_steps=min(20, steps), eval_every=eval_every or max(1, steps // 4))
        result = fit(module, phase_loss, data, fit_config, evaluate=evaluate, log=ctx.log, seed=ctx.seed, device=ctx.device,
                     checkpointing=checkpointing)
        results.append(result)
        seconds += result.seconds
        figures.setdefault("loss_start", result.loss_start)
        figures["loss_end"] = result.loss_end
    module.to("cpu").eval()
    return figures | {"fit_seconds": round(seconds, 3)}, results


def evaluation_steps(results: list[FitResult]) -> list[int | None]:
    """The run-wide step of each call `train_qat`'s phases made to `evaluate`, in call order; None
    for a later phase's step-0 call, which re-measures the state the phase before ended on."""
    steps: list[int | None] = []
    offset = 0
    for result in results:
        steps += [None if point.step == 0 and steps else offset + point.step for point in result.history]
        offset += result.steps
    return steps
