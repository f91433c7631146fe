"""`BenchSettings`: what the bench times and when it stops. Kept apart from the timer so the
PASSES table (and `compress passes`) can read it without importing onnxruntime."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from compress.config import StrictConfig

PositiveInt = Annotated[int, Field(ge=1)]


class BenchSettings(StrictConfig):

    batch_sizes: tuple[PositiveInt, ...] = Field(
        (1,), min_length=1, description="batch sizes to time; each fills the model's dynamic batch axis"
    )
    threads: tuple[PositiveInt, ...] = Field(
        (1,), min_length=1, description="onnxruntime intra-op thread counts to time (inter-op threads stay 1); at most the machine's CPUs"
    )
    warmup: int = Field(3, ge=0, le=1000, description="untimed calls per model at each batch size and thread count, before timing")
    min_calls: int = Field(
        20, ge=20, le=1_000_000,
        description="timed calls per model before the confidence interval is first looked at (then at every doubling); 20 at least, so the interval exists at the stricter confidence of later looks",
    )
    target_pct: float = Field(
        2.0, gt=0, le=50, allow_inf_nan=False,
        description="stop timing once the 95% interval of the latency ratio (of the median latency, for a model timed alone) is within +/- this many percent; the interval holds 95% however early timing stops",
    )
    max_seconds: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False,
        description="time cap per batch size and thread count: timing stops there (after min_calls) even if the interval is still wider than the target",
    )
    seq_len: int = Field(128, ge=1, description="length given to dynamic sequence axes (text models)")
    seed: int = Field(0, description="seed of the random inputs")

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _once_each(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        # A repeated value would time the same setting twice and print two rows for it.
        return tuple(dict.fromkeys(values))


def speed_verdict(low: float, high: float, than: str = "the original") -> str:
    """A paired latency ratio's 95% interval in plain words: a slower model is said so, never
    left to be read off a number above 1."""
    if low > 1:
        return f"SLOWER than {than}"
    if high < 1:
        return f"faster than {than}"
    return f"no clear difference from {than}"
