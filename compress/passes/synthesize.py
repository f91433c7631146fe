"""The `synthesize` pass: make a synthetic input set from the teacher alone, save it with its
metadata, and hand it to later steps as the `synthetic` data source, so `distill` can train
without a single real input.

- CNNs with BatchNorm: BN-statistics inversion into images (compress/distill/synthetic.py), with
  `synthetic_samples.png` and `synthetic_bn.png`.
- Text encoders (input_ids, attention_mask): token sequences drawn from the tokenizer's vocabulary,
  optionally chosen by the teacher (compress/distill/text_synthesis.py), with
  `synthetic_samples.txt`.

The set is written to the run folder (`synthetic.safetensors`) and kept in a cache keyed by the
teacher's weight hash, the seed, the input shape and the settings: the same request comes back
from the cache at once. A set file given with `set_file` is used only when it was made from this
teacher. Any other model is refused, proposing real data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from compress.context import Context, Result
from compress.distill.settings import InversionSettings, TextSynthesisSettings

if TYPE_CHECKING:
    from torch import nn

    from compress.data.specs import Dataset
    from compress.distill.synthetic_set import SyntheticSet
    from compress.model import Model

# The data spec that names the run's synthetic set (distill's and qat's default).
SYNTHETIC = "synthetic"


class SynthesizeConfig(TextSynthesisSettings, InversionSettings):  # image fields list first
    set_file: str | None = Field(None, description="use this synthetic set file (from `compress synthesize`) instead of making one; refused if another teacher made it")


def synthesize(model: Model, config: SynthesizeConfig, ctx: Context) -> Result:
    from compress.data.specs import Dataset  # torch: imported when the step runs, not with PASSES

    # ADI's competition needs the student: the model this step was given.
    student = model.module if config.adi_weight > 0 else None
    made, artifacts = make_synthetic(ctx.teacher, config, ctx.run_dir, seed=ctx.seed, log=ctx.log, student=student)
    names = made.input_names
    data = Dataset(f"synthetic ({len(made.inputs[0])} inputs from {ctx.teacher.name})", made.inputs,
                   mask_input=names.index("attention_mask") if "attention_mask" in names else None)
    return Result(model, dict(made.figures), artifacts, data={SYNTHETIC: data})


def make_synthetic(teacher: Model, config: SynthesizeConfig, run_dir: Path, *, seed: int = 0,
                   log: Callable[[str], None] = lambda _: None, student: nn.Module | None = None) -> tuple[SyntheticSet, dict[str, Path]]:
    """The set for `teacher` and the files written with it: token sequences for a text encoder,
    BN inversion otherwise (which refuses a model without BatchNorm). The pass and `compress
    synthesize` both call this."""
    from compress.distill.text_synthesis import is_text_encoder

    given = config.model_dump(exclude={"set_file"})
    if is_text_encoder(teacher):
        from compress.distill.text_synthesis import make_text_set, text_artifacts

        settings = TextSynthesisSettings(**{k: given[k] for k in TextSynthesisSettings.model_fields})
        return make_text_set(teacher, settings, run_dir, set_file=config.set_file, seed=seed, log=log), text_artifacts(run_dir)
    from compress.distill.synthesis import make_set, set_artifacts

    settings = InversionSettings(**{k: given[k] for k in InversionSettings.model_fields})
    made = make_set(teacher, settings, run_dir, set_file=config.set_file, seed=seed, log=log, student=student)
    return made, set_artifacts(run_dir)


def training_data(model: Model, spec: str | None, needed_by: str, ctx: Context) -> tuple[Dataset, Result | None]:
    """A training pass's data: its own spec, or (`synthetic`, the default) the run's synthetic set,
    made now with synthesize's defaults when no synthesize step ran before; then that step's Result
    comes back too, so the caller reports its figures and files and hands the set on to later steps."""
    if spec is not None and spec != SYNTHETIC:
        return ctx.dataset(spec, "train"), None
    if SYNTHETIC in ctx.data:
        return ctx.data[SYNTHETIC], None
    ctx.log(f"{needed_by}: no synthetic set in this run yet: synthesizing one with synthesize's defaults (give --data for real data)")
    made = synthesize(model, SynthesizeConfig(), ctx)
    return made.data[SYNTHETIC], made
