"""`BenchSettings`: what the bench times and when it stops. Kept apart from the timer so the
PASSES table (and `compress passes`) can read it without importing onnxruntime."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

PositiveInt = Annotated[int, Field(ge=1)]


class BenchSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_sizes: tuple[PositiveInt, ...] = Field(
        (1,), min_length=1, description="batch sizes to time; each fills the model's dynamic batch axis"
    )
    threads: tuple[PositiveInt, ...] = Field(
        (1,), min_length=1, description="onnxruntime intra-op thread counts to time (inter-op threads stay 1)"
    )
    warmup: int = Field(10, ge=0, description="untimed calls before the timed calls of each round")
    iters: int = Field(100, ge=1, description="timed calls per model per round")
    rounds: int = Field(
        3, ge=1, description="rounds in which the models take turns; the spread of per-round medians shows run-to-run noise"
    )
    seq_len: int = Field(128, ge=1, description="length given to dynamic sequence axes (text models)")
    seed: int = Field(0, description="seed of the random inputs")

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _once_each(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        # A repeated value would time the same setting twice and print two rows for it.
        return tuple(dict.fromkeys(values))
