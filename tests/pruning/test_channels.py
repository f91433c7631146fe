"""The channel graph and the channel edit: groups, protection, the zero-channel property, and
refusal (never silent) of what cannot be pruned correctly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import seeded_cnn
from torch import nn

from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.pruning.channels import ChannelGraph
from compress.pruning.edits import prune_channels
from compress.pruning.plan import Ratios, pruner_for


def _model(module, shape=(1, 1, 8, 8)):
    return load("tiny_models:cnn").replace(module=module.eval(), example_inputs=(torch.randn(shape, generator=torch.Generator().manual_seed(1)),))


def test_groups_couple_the_residual_and_protect_the_head():
    graph = ChannelGraph(seeded_cnn(width=8), (torch.randn(1, 1, 8, 8),))
    # stem conv, its BN, the block conv's output and BN are one group through the residual add;
    # the head's input features are in it, the head's logits are not prunable.
    (residual,) = graph.groups
    assert {"stem.0 (Conv2d, out)", "stem.1 (BatchNorm2d, out)", "block.0 (Conv2d, out)", "head (Linear, in)"} <= set(residual.touches)
    assert "add" in residual.operations and residual.width == 8
    assert not any("head (Linear, out)" in g.touches for g in graph.groups)


@settings(max_examples=15, deadline=None)
@given(zeroed=st.sets(st.integers(0, 7), min_size=1, max_size=7), seed=st.integers(0, 1000))
def test_pruning_zero_importance_channels_leaves_outputs_unchanged(zeroed, seed):
    """Channels whose BN scale and shift are zero carry nothing: bn_scale ranks them last, and
    removing them does not change a single output."""
    module = seeded_cnn(seed=seed, width=8)

    class Branchy(nn.Module):  # a plain conv-BN-conv chain inside the residual block
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))
            self.base = module

        def forward(self, x):
            h = self.base.stem(x)
            h = h + self.inner(h)
            return self.base.head(h.mean(dim=(2, 3)))

    torch.manual_seed(seed)
    net = Branchy().eval()
    idx = torch.tensor(sorted(zeroed))
    with torch.no_grad():
        net.inner[1].weight[idx] = 0
        net.inner[1].bias[idx] = 0
        net.inner[1].running_mean.uniform_(-1, 1)
    model = _model(net)
    pruner = pruner_for(model, ("base.*",))
    scores = pruner.scores("bn_scale")
    edit = pruner.edit(scores, Ratios(len(zeroed) / 8, 0, 0), "uniform", 1, True)
    assert sorted(set(range(8)) - set(edit["kept"]["inner.0"])) == sorted(zeroed)
    pruned = pruner.apply(edit, check=True)
    x = torch.randn(4, 1, 8, 8)
    assert pruned.module.inner[0].out_channels == 8 - len(zeroed)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_channel_shuffle_is_refused_by_name_not_pruned_wrong():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.b, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.Linear(8, 3)

        def forward(self, x):
            x = torch.relu(self.bn(self.a(x)))
            b, c, h, w = x.shape
            x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
            return self.head(self.b(x).mean((2, 3)))

    torch.manual_seed(0)
    model = _model(Shuffle())
    pruner = pruner_for(model, ())
    edit = pruner.edit(pruner.scores("l2"), Ratios(0.5, 0, 0), "uniform", 1, True)
    with pytest.raises(UsageError, match=r"prune: a \(.*reshape.*\).*--ignore 'a'"):
        pruner.apply(edit, check=True)


def test_channel_halves_added_together_are_refused_by_name():
    class Halves(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(4, 8, 1), nn.Linear(8, 3)

        def forward(self, x):
            x = self.a(x)
            return self.head(self.b(x[:, :4] + x[:, 4:]).mean((2, 3)))

    model = _model(Halves())
    pruner = pruner_for(model, ())
    with pytest.raises(UsageError, match=r"prune: a \(slice"):
        pruner.apply(pruner.edit(pruner.scores("l2"), Ratios(0.5, 0, 0), "uniform", 1, True), check=True)


def test_a_custom_autograd_function_that_mixes_channels_is_refused_by_name():
    class Roll(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.roll(1, dims=1)

        @staticmethod
        def backward(ctx, grad):
            return grad.roll(-1, dims=1)

    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.b(Roll.apply(self.a(x))).mean((2, 3)))

    pruner = pruner_for(_model(Rolled()), ())
    with pytest.raises(UsageError, match=r"prune: a \(.*roll.*\).*--ignore 'a'"):
        pruner.apply(pruner.edit(pruner.scores("l2"), Ratios(0.5, 0, 0), "uniform", 1, True), check=True)


def test_multihead_attention_is_refused_naming_module_and_operation():
    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.attn, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            return self.head(self.attn(t, t, t)[0].mean(1))

    with pytest.raises(UsageError, match=r"prune: attn \(MultiheadAttention\).*--ignore"):
        pruner_for(_model(WithAttention()), ())


def test_an_ignored_layer_keeps_its_channels_and_its_group():
    digits = load("digits")
    names = {g.name for g in pruner_for(digits, ("conv1",)).groups}
    assert "conv1" not in names and "layer1.0.conv1" in names
    with pytest.raises(UsageError, match="no prunable channel group"):
        pruner_for(_model(seeded_cnn(width=8)), ("stem.*",))


def test_replaying_the_edit_on_a_fresh_model_gives_the_same_shapes_and_outputs():
    model = _model(seeded_cnn(width=8))
    pruner = pruner_for(model, ())
    edit = pruner.edit(pruner.scores("l1"), Ratios(0.5, 0, 0), "uniform", 2, True)
    pruned = pruner.apply(edit)
    fresh = prune_channels(_model(seeded_cnn(width=8)), edit)
    fresh.module.load_state_dict(pruned.module.state_dict())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh(x), pruned(x)) and fresh.edits == (edit,)
