"""Small seeded models for the tests, importable as factories: `--model tiny_models:cnn`."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv + BN + a residual block + pooling + linear head: the shapes that matter, tiny."""

    def __init__(self, width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(x.mean(dim=(2, 3)))


def seeded_cnn(seed: int = 0, width: int = 4) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(width)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics, as after training
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class ResidualCNN(nn.Module):
    """A residual block written as digits' ResNet writes it: ReLU and pooling as modules, the
    block's input read by its first conv and by the skip."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.stem_bn, self.stem_relu = nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        out = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(out)) + x)
        return self.head(torch.flatten(self.pool(x), 1))


def residual_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = ResidualCNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # spread the logits, as a trained model's are, so top-1 is not a coin toss
        model.head.weight.mul_(30)
    return model.eval()


def cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return seeded_cnn(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


def cnn_without_inputs() -> nn.Module:
    return seeded_cnn()


def wide_cnn() -> nn.Module:
    return seeded_cnn(width=8)


def not_a_module() -> int:
    return 42


class NaNHead(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * float("nan")


def interrupted() -> nn.Module:
    raise KeyboardInterrupt


def buggy() -> nn.Module:
    raise RuntimeError("factory bug")


def nan_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Runs, but every output is NaN: a run on it fails (parity, finiteness)."""
    return NaNHead(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


class Sleepy(nn.Module):
    """The tiny CNN, slowed down so a test can signal a run while it is writing its folder."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = seeded_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        # Long enough that the run is still writing when a test's second run (which may take
        # seconds on a loaded machine) has been refused; every test kills it anyway.
        time.sleep(1.0)
        return self.inner(x)


def sleepy_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Sleepy(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


class BatchOfOne(nn.Module):
    """Flattens with x.view(1, -1): runs at batch 1 only, and its trace fixes that batch."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.view(1, -1))


def batch_of_one() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return BatchOfOne().eval(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


class BatchSum(nn.Module):
    """Sums over the whole batch: one output row whatever the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1).sum(dim=1, keepdim=True)


def batch_sum() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return BatchSum(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


class DictHead(nn.Module):
    """Returns a dict, as many research models do: logits and the pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = seeded_cnn()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body.stem(x).mean(dim=(2, 3))
        return {"features": features, "logits": self.body(x)}


def dict_out() -> tuple[nn.Module, torch.Tensor]:
    return DictHead(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class TupleHead(DictHead):
    def forward(self, x: torch.Tensor):
        out = super().forward(x)
        return out["logits"], out["features"]


def tuple_out() -> tuple[nn.Module, torch.Tensor]:
    return TupleHead(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class ModelOutputHead(DictHead):
    """Returns transformers' ModelOutput dataclass, like every Hugging Face model."""

    def forward(self, x: torch.Tensor):
        from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

        out = super().forward(x)
        return ImageClassifierOutputWithNoAttention(logits=out["logits"], hidden_states=(out["features"],))


def model_output() -> tuple[nn.Module, torch.Tensor]:
    return ModelOutputHead(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class ScalarHead(DictHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)["logits"].sum()


def scalar_out() -> tuple[nn.Module, torch.Tensor]:
    return ScalarHead(), torch.randn(1, 1, 8, 8)


class TextHead(DictHead):
    def forward(self, x: torch.Tensor) -> str:
        return "a caption"


def text_out() -> tuple[nn.Module, torch.Tensor]:
    return TextHead(), torch.randn(1, 1, 8, 8)


def needs_args(width: int, depth: int = 2) -> nn.Module:
    return seeded_cnn(width=width)


def returns_none() -> None:
    return None


def returns_three() -> tuple:
    return seeded_cnn(), torch.randn(1, 1, 8, 8), "extra"


def wrong_inputs() -> tuple[nn.Module, torch.Tensor]:
    return seeded_cnn(), torch.randn(1, 3, 8, 8)  # the CNN takes one channel


def cnn_without_bn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A classifier with no BatchNorm: nothing for BN inversion to invert."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    return module.eval(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)


class InterruptedInParity(TinyCNN):
    """Runs at batch 1 (load, checks, export), then Ctrl-C when export's parity feeds a batch of
    2: an interruption while the run folder is half written."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise KeyboardInterrupt
        return super().forward(x)


def interrupted_in_parity() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return InterruptedInParity().eval(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class ScoreHead(TinyCNN):
    """One score per input, shape [batch], like a binary classifier's logit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, 0]


def score_out() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ScoreHead().eval(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def plain_cnn() -> nn.Module:
    """Convolutions without BatchNorm or dropout: every input's gradient is its own, so training
    under torchrun (each rank a share of the batch) matches the 1-process run to float rounding."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()


class Interruptible(nn.Module):
    """The tiny CNN whose training forwards can be slowed (TINY_TRAIN_SLEEP_S seconds each) or
    interrupted like Ctrl-C (KeyboardInterrupt at forward number TINY_INTERRUPT_AT), so a test can
    stop a run between two of its checkpoints. Evaluation runs at full speed."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = seeded_cnn()
        self.training_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os
        import time

        if self.training:
            self.training_forwards += 1
            if self.training_forwards == int(os.environ.get("TINY_INTERRUPT_AT", 0)):
                raise KeyboardInterrupt
            time.sleep(float(os.environ.get("TINY_TRAIN_SLEEP_S", 0)))
        return self.inner(x)


def interruptible_cnn() -> nn.Module:
    return Interruptible().eval()


class ValueBranch(TinyCNN):
    """Branches on its own output values: torch.export (and so PT2E quantization) cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if y.sum() > 0:
            return y
        return -y


def value_branch() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ValueBranch(), torch.randn(1, 1, 8, 8)


class ChannelShuffle(nn.Module):
    """A channel shuffle (ShuffleNet) between two convs: a reshape that mixes the channel axis,
    which dependency tracing cannot follow; prune must refuse it by name."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.a(x)))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(self.b(x).mean((2, 3)))


def channel_shuffle() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return ChannelShuffle().eval(), (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),)
