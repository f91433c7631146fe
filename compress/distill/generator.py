"""What BN inversion optimises: the inputs' pixels, or a Genie-style generator and its latents.

- `PixelInputs`: the inputs themselves, held at 1/downsample of the resolution and upsampled
  bilinearly (DeepInversion optimises pixels; the low resolution is our lever, see synthetic.py).
- `GeneratorInputs`: Genie (Jeon et al., "Genie: Show Me the Data for Quantization", CVPR 2023;
  SamsungLabs/Genie `distill.py`): a small generator, fresh for every batch, maps one learned latent
  per input to an image, and both are optimised together against the same loss. The generator's
  shared weights couple the inputs of a batch, so each step moves all of them along directions
  that lowered the loss for the others: fewer steps per image for the same statistics. The
  architecture is Genie's (DAFL's generator): Linear(256 -> 128 (h/4)^2) -> BN -> up x2 -> conv ->
  BN -> LeakyReLU 0.2 -> up x2 -> conv -> tanh -> BN without affine, here at the low resolution h,
  then upsampled like the pixels. Learning rates as Genie's code uses them (its names are swapped):
  the latents at the peak rate, the generator at a tenth of it.

Both are modules whose `forward()` returns the current [N, C, H, W] inputs, and whose
`param_groups(lr)` gives the optimiser its groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LATENT_DIM = 256  # Genie's latent size
GENERATOR_LR_SHARE = 0.03  # Genie uses 0.1 (0.01 against 0.1); 0.03 matched the BN statistics better on digits


class PixelInputs(nn.Module):
    def __init__(self, n: int, shape: tuple[int, int, int], low: tuple[int, int], generator: torch.Generator) -> None:
        super().__init__()
        self.size = shape[1:]
        self.low = nn.Parameter(torch.randn(n, shape[0], *low, generator=generator))

    def forward(self) -> torch.Tensor:
        return _upsample(self.low, self.size)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.low], "lr": lr}]


class GeneratorInputs(nn.Module):
    def __init__(self, n: int, shape: tuple[int, int, int], low: tuple[int, int], generator: torch.Generator, width: int = 64) -> None:
        super().__init__()
        self.size = shape[1:]
        self.start = (max(1, low[0] // 4), max(1, low[1] // 4))
        self.low = low
        self.latents = nn.Parameter(torch.randn(n, LATENT_DIM, generator=generator))
        self.project = nn.Linear(LATENT_DIM, 2 * width * self.start[0] * self.start[1])
        self.bn0 = nn.BatchNorm2d(2 * width)
        self.conv1 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2))
        self.conv2 = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
                                   nn.Conv2d(width, shape[0], 3, padding=1), nn.Tanh(), nn.BatchNorm2d(shape[0], affine=False))
        _seeded_init(self, generator)

    def forward(self) -> torch.Tensor:
        x = self.bn0(self.project(self.latents).view(len(self.latents), -1, *self.start))
        x = self.conv1(F.interpolate(x, size=_midway(self.start, self.low), mode="nearest"))
        x = self.conv2(F.interpolate(x, size=self.low, mode="nearest"))
        return _upsample(x, self.size)

    def param_groups(self, lr: float) -> list[dict]:
        weights = [p for name, p in self.named_parameters() if name != "latents"]
        return [{"params": [self.latents], "lr": lr}, {"params": weights, "lr": lr * GENERATOR_LR_SHARE}]


def _midway(start: tuple[int, int], end: tuple[int, int]) -> tuple[int, int]:
    return (max(start[0], end[0] // 2), max(start[1], end[1] // 2))


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def _seeded_init(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every weight from the inversion's own generator (torch's default init reads the
    global RNG), with the default init's scale: uniform within 1/sqrt(fan_in)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            bound = 1.0 / (layer.weight[0].numel() ** 0.5)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
            layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
