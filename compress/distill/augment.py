"""Augmentation of image inputs during KD: the teacher labels whatever the student sees, so any
transform of the input is label-safe, and a small synthetic set goes further when each step sees
new variations of it.

- `shift_images`: a random sub-pixel translation of each image (bilinear, border-filled);
- flips: a random horizontal mirror of each image (off for data whose mirror image is not data,
  such as digits);
- mixing: each image blended with another of the batch by a uniform random weight (mixup, Zhang
  et al. 2018, without label mixing: the teacher labels the blend).

`Augmented` wraps a `fit` loss so the augmentation happens inside the one training loop, with the
random state `fit` seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.errors import UsageError


@dataclass(frozen=True)
class ImageAugmentation:
    shift_px: float = 0.0  # largest translation, in pixels, along each axis
    flip: bool = False
    mix: float = 0.0  # share of the batch blended with another of its images

    @property
    def active(self) -> bool:
        return self.shift_px > 0 or self.flip or self.mix > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.shift_px > 0:
            images = shift_images(images, self.shift_px, generator)
        if self.flip:
            mirrored = torch.rand(len(images), generator=generator) < 0.5
            images = torch.where(mirrored[:, None, None, None], images.flip(3), images)
        if self.mix > 0:
            images = _mix(images, self.mix, generator)
        return images


def shift_images(images: torch.Tensor, max_shift_px: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by its own random sub-pixel offset in [-max, max] pixels (bilinear)."""
    n, _, height, width = images.shape
    shifts_px = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift_px
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # affine_grid works in [-1, 1] coordinates, where one pixel is 2 / size.
    theta[:, 0, 2] = shifts_px[:, 0] * 2 / width
    theta[:, 1, 2] = shifts_px[:, 1] * 2 / height
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    # Repeating the border fills the uncovered strip with background, not with zeros.
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _mix(images: torch.Tensor, share: float, generator: torch.Generator | None) -> torch.Tensor:
    n = len(images)
    weight = torch.rand(n, generator=generator)
    blended = torch.rand(n, generator=generator) < share
    weight = torch.where(blended, weight, torch.ones(n)).to(images.device, images.dtype)[:, None, None, None]
    partner = torch.randperm(n, generator=generator).to(images.device)
    return weight * images + (1 - weight) * images[partner]


class Augmented(nn.Module):
    """A `fit` loss whose batches' image input is augmented first. A module, so the inner loss's
    own parameters (KD projections) stay visible to `fit`."""

    def __init__(self, loss: nn.Module, augmentation: ImageAugmentation) -> None:
        super().__init__()
        self.loss = loss
        self.augmentation = augmentation

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        images, *rest = batch.inputs
        return self.loss(student, replace(batch, inputs=(self.augmentation(images), *rest)))


def check_images(inputs: tuple[torch.Tensor, ...], what: str) -> None:
    """Image augmentation needs one float [N, C, H, W] input; say so for anything else (text)."""
    if len(inputs) != 1 or inputs[0].dim() != 4 or not inputs[0].is_floating_point():
        raise UsageError(what, "set for a model without one image input", "image augmentation needs one float [N, C, H, W] input; set it to 0 / off for this model")
