"""The real digits data (scikit-learn's 1,797 handwritten 8x8 images, shipped inside the package, no
download): scaled to [0, 1], upsampled bilinearly to 32x32, split 80/20 stratified with a fixed seed
and standardised with the train split's statistics. The test split is never trained on; it is the
held-out set `digits:test` that the bundled model's quality is measured against.

The raw images, labels and split indices ship as `digits_split.npz` (32 KB), written once from
scikit-learn by `python -m compress.data.digits`, so loading digits never imports scikit-learn
(seconds on a busy machine); tests/data/test_digits_split.py checks the file against scikit-learn.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from compress.errors import UsageError

NUM_CLASSES = 10
IMAGE_SIZE = 32
SPLIT_SEED = 0
TEST_FRACTION = 0.2
SPLIT_FILE = Path(__file__).with_name("digits_split.npz")

Split = Literal["train", "test"]


def split_from_sklearn() -> dict[str, np.ndarray]:
    """The raw arrays from scikit-learn: 8x8 pixel counts 0..16, labels, and the stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return {"pixels": digits.images.astype(np.uint8), "labels": digits.target.astype(np.uint8),
            "train_idx": train_idx.astype(np.int16), "test_idx": test_idx.astype(np.int16)}


def read_split_file(path: Path = SPLIT_FILE) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    raw = read_split_file()
    # 8x8 pixels hold counts 0..16 of a 4x4 grid of the original 32x32 bitmaps.
    images = torch.from_numpy(raw["pixels"].astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(raw["labels"].astype(np.int64))
    train_idx, test_idx = (torch.from_numpy(raw[k].astype(np.int64)) for k in ("train_idx", "test_idx"))
    # Statistics from the train split only, so nothing about the test images leaks into the inputs.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return {
        "train": (images[train_idx].contiguous(), labels[train_idx].contiguous()),
        "test": (images[test_idx].contiguous(), labels[test_idx].contiguous()),
    }


def load_split(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 [N, 1, 32, 32] and labels int64 [N] of one split: 1437 train, 360 test."""
    if split not in ("train", "test"):
        raise UsageError("digits split", split, "use 'train' or 'test'")
    images, labels = _splits()[split]
    # Copies, so a caller that edits its batch in place cannot change the next caller's data.
    return images.clone(), labels.clone()


if __name__ == "__main__":  # python -m compress.data.digits [PATH]: write the split file from scikit-learn
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SPLIT_FILE
    np.savez_compressed(target, **split_from_sklearn())
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")
