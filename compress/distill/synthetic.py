"""BatchNorm-statistics inversion: synthesize inputs from a trained CNN alone.

DeepInversion (Yin et al., "Dreaming to Distill", CVPR 2020, eq. 3-6; NVlabs/DeepInversion
`deepinversion.py`) optimises a batch of inputs so that the batch mean and variance of every
BatchNorm layer's input match the layer's running statistics, with cross-entropy towards sampled
target classes and total-variation / L2 image priors. ZeroQ (Cai et al., CVPR 2020) uses the same
statistics without labels. The levers here, chosen to make it fast on a small CPU:

- images are optimised at `1/downsample` of the input resolution and upsampled bilinearly, so there
  are fewer free pixels and no high-frequency noise to suppress (DeepInversion's setting 0 starts at
  half resolution for the same reason);
- each batch takes few steps (Adam, betas (0.5, 0.9), cosine learning rate) and the set is built
  from several independent batches, since every batch matches the statistics on its own;
- the first BN layer's term is weighted `first_bn_weight` times (DeepInversion's
  `first_bn_multiplier`): it sees the inputs directly and pins their scale;
- random jitter (a roll of up to `jitter_px` pixels) and optional flips each step, so the images
  do not overfit one alignment of the receptive fields;
- optionally, the adaptive competition of ADI (eq. 8): 1 - JS(student, teacher), pushing images
  to where a given student still disagrees with the teacher;
- optionally (`generator`), Genie's parametrisation: a small generator and learned latents instead
  of the pixels (compress/distill/generator.py).

Target classes are balanced: each batch cycles through the classes in a seeded random order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compress.distill.generator import GeneratorInputs, PixelInputs
from compress.distill.settings import InversionSettings


@dataclass(frozen=True)
class Inverted:
    """A synthetic set and what its making measured."""

    images: torch.Tensor  # [N, C, H, W] float32, in the teacher's input space
    targets: torch.Tensor  # [N] int64, the sampled classes
    layer_names: tuple[str, ...]
    # Per BN layer, averaged over batches: the relative distance of the batch statistics from the
    # running ones (|mean - rm| / |rm| and |var - rv| / |rv|, each an L2 norm), before and after.
    mean_error_before: tuple[float, ...]
    mean_error_after: tuple[float, ...]
    var_error_before: tuple[float, ...]
    var_error_after: tuple[float, ...]
    bn_loss_before: float  # the unweighted BN-statistics loss on the initial noise, mean over batches
    bn_loss_after: float


class BNStatistics:
    """Forward hooks on every BatchNorm layer that record the batch mean and (biased) variance of
    its input over all dimensions but the channel one, the quantities BN normalises with."""

    def __init__(self, module: nn.Module) -> None:
        self._names = {m: name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        # Recorded in call order, which is not the order of registration in every model (transformers'
        # ResNet registers a block's shortcut before the layers it runs first), and a layer the
        # forward never calls records nothing.
        self.called: list[nn.modules.batchnorm._BatchNorm] = []
        self.batch: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handles = [m.register_forward_hook(self._record) for m in self._names]

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The BatchNorm layers of the last forward, in the order it called them."""
        return tuple(self._names[layer] for layer in self.called)

    def _record(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        # E[x^2] - E[x]^2 rather than torch.var_mean: the same figure, but the two plain reductions
        # and their backward run 1.3-1.9x faster on CPU over (N, H, W) (measured for digits' layers).
        mean = x.mean(dim=dims)
        var = (x * x).mean(dim=dims) - mean * mean
        self.called.append(layer)
        self.batch.append((mean, var))

    def per_layer_loss(self) -> torch.Tensor:
        """[L] tensor: ||mean - running_mean||_2 + ||var - running_var||_2 per layer (DeepInversion eq. 4)."""
        if not self.batch:  # BatchNorm layers that this forward never called
            return torch.zeros(0)
        return torch.stack([
            torch.linalg.vector_norm(mean - layer.running_mean) + torch.linalg.vector_norm(var - layer.running_var)
            for layer, (mean, var) in zip(self.called, self.batch)
        ])

    def relative_errors(self) -> tuple[list[float], list[float]]:
        means, variances = [], []
        for layer, (mean, var) in zip(self.called, self.batch):
            means.append(_relative(mean, layer.running_mean))
            variances.append(_relative(var, layer.running_var))
        return means, variances

    def clear(self) -> None:
        self.called.clear()
        self.batch.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(value - reference) / torch.linalg.vector_norm(reference).clamp_min(1e-8)).item()


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def balanced_targets(count: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """`count` class ids, each class as often as possible (counts differ by at most one), shuffled."""
    repeats = math.ceil(count / classes)
    ids = torch.cat([torch.randperm(classes, generator=generator) for _ in range(repeats)])[:count]
    return ids[torch.randperm(count, generator=generator)]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's TV_2: the L2 norms of the four neighbour differences (two axes, two diagonals)."""
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))


def js_competition(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """ADI's 1 - JS(p_S, p_T) at temperature 3, probabilities clamped to [0.01, 0.99] (deepinversion.py)."""
    p_s = F.softmax(student_logits / temperature, dim=1).clamp(0.01, 0.99)
    p_t = F.softmax(teacher_logits / temperature, dim=1).clamp(0.01, 0.99)
    mixture = 0.5 * (p_s + p_t)
    js = 0.5 * (F.kl_div(mixture.log(), p_s, reduction="batchmean") + F.kl_div(mixture.log(), p_t, reduction="batchmean"))
    return 1.0 - js.clamp(0.0, 1.0)


def invert(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    settings: InversionSettings,
    *,
    seed: int = 0,
    student: nn.Module | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Inverted:
    """Make `settings.images` inputs of shape `input_shape` (without the batch axis) from `teacher`
    (a classifier with BatchNorm, kept in eval mode so its running statistics are the targets)."""
    teacher.eval()
    was_grad = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)  # only the inputs are optimised: no weight gradients to compute
    stats = BNStatistics(teacher)
    generator = torch.Generator().manual_seed(seed)
    try:
        classes = _output_classes(teacher, input_shape)
        layer_names = stats.layer_names
        stats.clear()
        targets = balanced_targets(settings.images, classes, generator)
        batches, before, after = [], [], []
        for start in range(0, settings.images, settings.batch_size):
            batch_targets = targets[start : start + settings.batch_size]
            images, first, last = _invert_batch(teacher, stats, input_shape, batch_targets, settings, generator, student)
            batches.append(images)
            before.append(first)
            after.append(last)
            log(f"synthesize: {start + len(batch_targets)}/{settings.images} inputs, BN-statistics loss {first[0]:.3g} -> {last[0]:.3g}")
    finally:
        stats.remove()
        for p, flag in zip(teacher.parameters(), was_grad):
            p.requires_grad_(flag)
    weights = torch.tensor([len(b) for b in batches], dtype=torch.float64)

    def averaged(index: int, runs: list) -> tuple[float, ...]:
        table = torch.tensor([r[index] for r in runs], dtype=torch.float64)
        return tuple((table * weights[:, None]).sum(0).div(weights.sum()).tolist())

    return Inverted(
        images=torch.cat(batches),
        targets=targets,
        layer_names=layer_names,
        mean_error_before=averaged(1, before),
        mean_error_after=averaged(1, after),
        var_error_before=averaged(2, before),
        var_error_after=averaged(2, after),
        bn_loss_before=float((torch.tensor([b[0] for b in before], dtype=torch.float64) * weights).sum() / weights.sum()),
        bn_loss_after=float((torch.tensor([a[0] for a in after], dtype=torch.float64) * weights).sum() / weights.sum()),
    )


def _output_classes(teacher: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return teacher(torch.zeros(2, *input_shape)).shape[1]


def _invert_batch(teacher, stats, input_shape, targets, settings, generator, student):
    n = len(targets)
    _, height, width = input_shape
    low = (max(1, height // settings.downsample), max(1, width // settings.downsample))
    inputs = (GeneratorInputs if settings.generator else PixelInputs)(n, input_shape, low, generator)
    optimizer = torch.optim.Adam(inputs.param_groups(settings.lr), betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps)

    with torch.no_grad():
        before = _measure(teacher, stats, inputs())
    for _ in range(settings.steps):
        x = _augment(inputs(), settings, generator)
        stats.clear()
        logits = teacher(x)
        per_layer = stats.per_layer_loss()
        loss = settings.bn_weight * (settings.first_bn_weight * per_layer[:1].sum() + per_layer[1:].sum())
        loss = loss + settings.ce_weight * F.cross_entropy(logits, targets)
        loss = loss + settings.tv_weight * total_variation(x) + settings.l2_weight * torch.linalg.vector_norm(x.flatten(1), dim=1).mean()
        if student is not None and settings.adi_weight > 0:
            loss = loss + settings.adi_weight * js_competition(student.eval()(x), logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        # At full resolution (downsample 1) the inputs are the optimised leaf itself: detached, so
        # the set, its plots and its file hold plain tensors.
        final = inputs().detach()
    return final, before, _measure(teacher, stats, final)


@torch.no_grad()
def _measure(teacher: nn.Module, stats: BNStatistics, x: torch.Tensor) -> tuple[float, list[float], list[float]]:
    stats.clear()
    teacher(x)
    loss = stats.per_layer_loss().sum().item()
    means, variances = stats.relative_errors()
    stats.clear()
    return loss, means, variances


def _augment(x: torch.Tensor, settings: InversionSettings, generator: torch.Generator) -> torch.Tensor:
    if settings.jitter_px:
        dx, dy = (torch.randint(-settings.jitter_px, settings.jitter_px + 1, (2,), generator=generator)).tolist()
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    if settings.flip and torch.rand((), generator=generator).item() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x
