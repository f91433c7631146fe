"""Train the bundled `digits` ResNet-20 and write its weights as safetensors.

    python -m compress.models.train_digits --out models/digits.safetensors

One loop, readable top to bottom; the hyper-parameters are the flat constants below. It trains on
the train split only and measures the final weights once on the test split (no checkpoint is
picked by its test accuracy). Progress goes to stderr; the last line gives the test accuracy,
parameter count and training seconds that benchmarks/README.md quotes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from compress.atomic import atomic_path
from compress.metrics import accuracy as top1_accuracy
from compress.data.digits import load_split
from compress.distill.augment import shift_images
from compress.models.digits import WEIGHTS_PATH, build_module

EPOCHS = 30  # ~105 s on 2 idle CPU threads; the cosine schedule ends at the last epoch
BATCH_SIZE = 64
LEARNING_RATE = 3e-3  # AdamW peak rate, decayed by a cosine over every step
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.05
MAX_SHIFT_PX = 3.0  # random sub-pixel translation of each training image, in 32x32 pixels
SEED = 0
THREADS = 2


@torch.no_grad()
def accuracy(module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return top1_accuracy(module.eval()(images), labels)


def train(epochs: int = EPOCHS, seed: int = SEED, log: Callable[[str], None] | None = None) -> tuple[nn.Module, float]:
    """Train a fresh ResNet-20 on the train split; return it in eval mode and the training seconds."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_split("train")
    module = build_module()
    optimizer = torch.optim.AdamW(module.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(labels) / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum = 0.0
        for batch in order.split(BATCH_SIZE):
            inputs = shift_images(images[batch], MAX_SHIFT_PX, generator)
            loss = F.cross_entropy(module(inputs), labels[batch], label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
        if log:
            elapsed = time.perf_counter() - start
            log(f"epoch {epoch + 1}/{epochs}  loss {loss_sum / len(labels):.4f}  {elapsed:.0f} s")
    return module.eval(), time.perf_counter() - start


def save_weights(module: nn.Module, out: Path, metadata: dict[str, str]) -> None:
    """The full state dict (BatchNorm running statistics included), written atomically."""
    state = {name: tensor.detach().contiguous().clone() for name, tensor in module.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="safetensors file to write")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the train split")
    parser.add_argument("--seed", type=int, default=SEED, help="seeds the initial weights, order and shifts")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    module, train_s = train(args.epochs, args.seed, log)
    test_images, test_labels = load_split("test")
    test_accuracy = accuracy(module, test_images, test_labels)
    params = sum(p.numel() for p in module.parameters())
    save_weights(
        module,
        args.out,
        {"test_accuracy": f"{test_accuracy:.4f}", "epochs": str(args.epochs), "seed": str(args.seed)},
    )
    log(f"test accuracy {test_accuracy:.4f} ({round(test_accuracy * len(test_labels))}/{len(test_labels)})")
    log(f"params {params}  train seconds {train_s:.1f}  threads {args.threads}  wrote {args.out}")


if __name__ == "__main__":
    main()
