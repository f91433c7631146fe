"""The `synthesize` pass: invert the teacher's BatchNorm statistics into a synthetic input set
(compress/distill/synthetic.py), save it with its metadata, and hand it to later steps as the
`synthetic` data source, so `distill` can train without a single real input.

The set is written to the run folder (`synthetic.safetensors`, with `synthetic_samples.png` and
`synthetic_bn.png`) and kept in a cache keyed by the teacher's weight hash, the seed, the input
shape and the settings: the same request comes back from the cache at once. A set file given
with `set_file` is used only when it was made from this teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from compress.context import Context, Result
from compress.distill.settings import InversionSettings

if TYPE_CHECKING:
    from compress.model import Model


class SynthesizeConfig(InversionSettings):
    set_file: str | None = Field(None, description="use this synthetic set file (from `compress synthesize`) instead of making one; refused if another teacher made it")


def synthesize(model: Model, config: SynthesizeConfig, ctx: Context) -> Result:
    from compress.data.specs import Dataset  # torch: imported when the step runs, not with PASSES
    from compress.distill.synthesis import make_set, set_artifacts

    settings = InversionSettings(**config.model_dump(exclude={"set_file"}))
    # ADI's competition needs the student: the model this step was given.
    student = model.module if config.adi_weight > 0 else None
    made = make_set(ctx.teacher, settings, ctx.run_dir, set_file=config.set_file, seed=ctx.seed, log=ctx.log, student=student)
    data = Dataset(f"synthetic ({len(made.images)} inputs from {ctx.teacher.name})", (made.images,))
    return Result(model, dict(made.figures), set_artifacts(ctx.run_dir), data={"synthetic": data})
