"""The `qat` pass: quantization-aware training with learned step sizes, driven by KD from the
float teacher through the one fit loop.

BatchNorm is folded into the convolutions first; every Conv2d / Linear not matched by `--ignore`
gets LSQ fake quantizers (weights per output channel at `--bits`, inputs per tensor at 8 bits),
initialised from calibration data (min/max or MSE); then the student trains against the teacher's
outputs. The result stays a torch model; `export` after it writes INT8 ONNX with the learned scales.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from compress.config import StrictConfig
from compress.context import Context, Result
from compress.errors import UsageError
from compress.quant.history import mark_quantized, refuse_if_quantized
from compress.quant.options import Bits, Init

if TYPE_CHECKING:
    from compress.model import Model


class QatConfig(StrictConfig):
    bits: Bits = Field("8", description="weight bits: 8, 4, 3, 2 or ternary (2 and ternary share the grid {-1, 0, 1} x step; ternary starts from TWN's step); activations stay 8-bit")
    init: Init = Field("mse", description="how the steps start: the largest magnitude (minmax) or the clipping with the least squared error (mse)")
    ignore: tuple[str, ...] = Field((), description="glob of layer names to keep in float, e.g. 'head' or 'layer1.*'")
    data: str | None = Field(None, description="training and calibration data spec (default: the training split of the model's own data, e.g. digits:train); never the held-out spec")
    steps: int = Field(100, ge=0, le=1_000_000, description="optimizer steps of KD training (0: calibration only)")
    lr: float = Field(1e-4, gt=0, le=1, description="peak AdamW learning rate (weights and steps)")
    batch_size: int = Field(32, ge=2, le=65536, description="training inputs per step")
    temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of the logit KL (classifiers)")
    calibration_samples: int = Field(256, ge=1, le=100_000, description="inputs that initialise the steps")

    @field_validator("bits", mode="before")
    @classmethod
    def _bits_as_text(cls, value: object) -> object:
        # A recipe says `bits: 8`; the grid names are text because of "ternary".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def qat(model: Model, config: QatConfig, ctx: Context) -> Result:
    from compress.data.specs import train_split
    from compress.distill.losses import KDLoss, KDWeights
    from compress.quant.edits import FAKE_QUANT, FOLD_BN
    from compress.quant.fake import wrap
    from compress.quant.fold import conv_bn_pairs, fold
    from compress.quant.prepare import init_steps, probe, quantizable
    from compress.train import FitConfig, fit

    refuse_if_quantized(model, "qat", "quantize once; start again from the float model")
    spec = config.data or train_split(ctx.heldout_spec or model.eval_data)
    if spec is None:
        raise UsageError("qat --data", "none given", "give training data, e.g. --data digits:train or --data text:train")
    data = ctx.dataset(spec, "train")
    student = model.copy()
    module = student.module
    pairs = conv_bn_pairs(module)
    fold(module, pairs)
    layers = quantizable(module, config.ignore)
    if not layers:
        raise UsageError("model", model.name, "has no Conv2d or Linear layer to quantize" + (f" outside --ignore {list(config.ignore)}" if config.ignore else ""))
    calibration = list(data.head(config.calibration_samples).batches(config.batch_size))
    shared, signed, samples = probe(module, layers, calibration)
    wrap(module, layers, config.bits, shared, signed)
    init_steps(module, samples, config.init, config.bits, seed=ctx.seed)
    edits = ({"kind": FOLD_BN, "pairs": [list(p) for p in pairs]},) if pairs else ()
    edits += ({"kind": FAKE_QUANT, "bits": config.bits, "layers": layers, "shared": shared, "signed": signed, "data": spec},)
    student = student.replace(edits=(*student.edits, *edits))
    ctx.log(f"qat: {len(layers)} layers at {config.bits}-bit weights / 8-bit inputs, {len(pairs)} BatchNorms folded, "
            f"steps from {config.init} on {data.name}")
    figures = {"bits": config.bits, "quantized_layers": len(layers), "float_layers": ", ".join(config.ignore) or "none",
               "folded_batchnorms": len(pairs), "shared_input_quantizers": len(shared)}
    if config.steps:
        module.requires_grad_(True)
        loss = KDLoss(ctx.teacher.module, module, task=model.task, temperature=config.temperature,
                      weights=KDWeights(kl=1.0), example_inputs=model.example_inputs)
        fit_config = FitConfig(steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                               warmup_steps=min(20, config.steps), eval_every=max(1, config.steps // 4))
        result = fit(module, loss, data, fit_config, log=ctx.log, seed=ctx.seed, device=ctx.device,
                     checkpointing=ctx.checkpointing)
        module.to("cpu").eval()
        figures |= {"loss_start": result.loss_start, "loss_end": result.loss_end, "fit_seconds": round(result.seconds, 3)}
    module.eval()
    return Result(mark_quantized(student, **{"pass": "qat", "bits": config.bits}), figures)
