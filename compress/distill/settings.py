"""The settings of BN inversion and of text synthesis, kept apart from the mechanics
(compress/distill/synthetic.py, compress/distill/text_synthesis.py) so the PASSES table can read
them without importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compress.config import StrictConfig


class InversionSettings(StrictConfig):
    """How a synthetic set is made; every field changes the images, so all of them key the cache."""

    # 128 images made the same student as 256 (0.9917 on digits) in half the time (benchmarks/README.md "Levers").
    images: int = Field(128, ge=1, le=100_000, description="number of synthetic inputs to make")
    batch_size: int = Field(64, ge=2, le=4096, description="inputs optimised together; BN batch statistics are matched per batch")
    steps: int = Field(100, ge=1, le=100_000, description="optimisation steps per batch")
    lr: float = Field(0.1, gt=0, le=10, description="peak Adam learning rate (betas 0.5, 0.9), decayed by a cosine to 0")
    bn_weight: float = Field(0.05, ge=0, description="weight of the BN-statistics loss (sum over layers of |mean - running_mean| + |var - running_var|)")
    first_bn_weight: float = Field(10.0, ge=0, description="extra factor on the first BN layer's term (DeepInversion's first_bn_multiplier)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy towards the sampled (balanced) target classes")
    tv_weight: float = Field(1e-4, ge=0, description="weight of the total-variation prior (L2 norms of neighbour differences)")
    l2_weight: float = Field(1e-5, ge=0, description="weight of the L2 prior on the inputs")
    adi_weight: float = Field(0.0, ge=0, description="weight of ADI's competition term 1 - JS(student, teacher); needs a student, 0 turns it off")
    jitter_px: int = Field(2, ge=0, le=64, description="random roll of the inputs by up to this many pixels each step")
    flip: bool = Field(False, description="random horizontal flips each step (off for digits and text-like images, whose mirror image is not in the data)")
    downsample: int = Field(4, ge=1, le=16, description="optimise the inputs at 1/downsample of the resolution and upsample them bilinearly (fewer free pixels: smooth inputs in fewer steps; 1 is plain DeepInversion)")
    generator: bool = Field(False, description="optimise a small Genie-style generator (fresh per batch) and one learned latent per input instead of the pixels themselves")


TextMethod = Literal["random", "vocab-rank", "diverse"]


class TextSynthesisSettings(StrictConfig):
    """How a synthetic set of token sequences is made for a text encoder (no BatchNorm to invert);
    every field changes the sequences, so all of them key the cache."""

    sequences: int = Field(1024, ge=2, le=1_000_000, description="text encoders: number of synthetic token sequences to make")
    # diverse gave the best student on MiniLM: held-out cosine 0.7205 against 0.7027 (vocab-rank)
    # and 0.6893 (random) after the same 100 KD steps (benchmarks/README.md).
    text_method: TextMethod = Field("diverse", description="text encoders: random (tokens drawn uniformly from the vocabulary), vocab-rank (Zipf's law over the tokenizer's vocabulary order, which follows token frequency) or diverse (vocab-rank candidates, the set the teacher embeds most diversely)")
    min_tokens: int = Field(8, ge=1, le=8192, description="text encoders: shortest sequence, special tokens included")
    max_tokens: int = Field(48, ge=1, le=8192, description="text encoders: longest sequence, special tokens included (capped at the model's sequence length); lengths are uniform in between, the rest is padding")
    zipf_exponent: float = Field(1.0, gt=0, le=4, description="text encoders: vocab-rank draws the token of rank r with probability proportional to 1 / (r + 1)^exponent")
    pool: int = Field(4, ge=1, le=64, description="text encoders: diverse draws this many candidates per kept sequence")

    @model_validator(mode="after")
    def _lengths(self) -> TextSynthesisSettings:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} is above max_tokens {self.max_tokens}; make min_tokens <= max_tokens")
        return self
