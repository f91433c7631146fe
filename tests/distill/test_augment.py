"""Image augmentation for KD: each transform does what it says and keeps shapes; the wrapper
augments inside the loss and keeps the inner loss's parameters visible to `fit`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.data.specs import Dataset
from compress.distill.augment import Augmented, ImageAugmentation, check_images
from compress.errors import UsageError


def _images(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_nothing_asked_nothing_changed():
    x = _images()
    assert not ImageAugmentation().active
    assert torch.equal(ImageAugmentation()(x), x)


def test_flip_mirrors_some_images_and_keeps_the_rest():
    x = _images(64)
    out = ImageAugmentation(flip=True)(x, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54


def test_mix_blends_images_within_their_range():
    x = torch.stack([torch.full((1, 4, 4), float(v)) for v in range(16)])
    out = ImageAugmentation(mix=1.0)(x, torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 15
    assert not torch.equal(out, x)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), out[:, 0, 0, 0])  # each output is one constant: a blend of two constants


def test_shift_keeps_shape_and_moves_pixels():
    x = _images()
    out = ImageAugmentation(shift_px=2.0)(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and not torch.allclose(out, x)


class _ProjectionLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.projection = nn.Linear(2, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        self.seen.append(batch.inputs[0])
        return student(batch.inputs[0]).sum()


def test_augmented_loss_sees_augmented_batches_and_keeps_parameters():
    inner = _ProjectionLoss()
    loss = Augmented(inner, ImageAugmentation(flip=True, mix=0.5))
    assert {id(p) for p in loss.parameters()} == {id(p) for p in inner.parameters()}
    batch = Dataset("x", (_images(),))
    loss(nn.Flatten(), batch)
    assert inner.seen[0].shape == batch.inputs[0].shape and not torch.equal(inner.seen[0], batch.inputs[0])


def test_text_inputs_are_refused():
    with pytest.raises(UsageError, match="image augmentation"):
        check_images((torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)), "distill --flip")
