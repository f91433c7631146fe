from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.metrics import accuracy, cosine, mac_count, neighbour_recall, param_count, quality, state_bytes, top1_agreement


def test_costs_of_a_linear_layer():
    layer = nn.Linear(16, 4)
    assert param_count(layer) == 16 * 4 + 4
    assert state_bytes(layer) == (16 * 4 + 4) * 4
    assert mac_count(layer, (torch.randn(3, 16),)) == 3 * 16 * 4


def test_mac_count_of_a_conv():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    assert mac_count(conv, (torch.randn(1, 2, 5, 5),)) == 5 * 5 * 3 * 2 * 9


def test_accuracy_and_agreement():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == 2 / 3
    assert top1_agreement(logits, logits * 2) == 1.0
    assert top1_agreement(logits, -logits) == 0.0


def test_neighbour_recall_is_one_for_identical_and_drops_for_noise():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 8, generator=g)
    assert neighbour_recall(emb, emb, k=10) == (1.0, 1.0)
    noisy = emb + 3 * torch.randn(50, 8, generator=g)
    recall, agree = neighbour_recall(noisy, emb, k=10)
    assert recall < 0.7 and agree < 1.0


def test_quality_for_each_task():
    emb = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    figures = quality("embedding", emb, emb, None)
    assert abs(figures["cosine_mean"] - 1) < 1e-9 and abs(figures["cosine_min"] - 1) < 1e-9
    assert figures["recall_at_10"] == 1.0
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(2))
    labels = logits.argmax(1)
    assert quality("classification", logits, logits, labels)["accuracy"] == 1.0
    assert cosine(logits, -logits).max().item() < -0.999


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), dim=st.integers(2, 8), seed=st.integers(0, 10_000), k=st.integers(1, 12))
def test_neighbour_recall_is_a_share(n, dim, seed, k):
    g = torch.Generator().manual_seed(seed)
    recall, agree = neighbour_recall(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g), k=k)
    assert 0.0 <= recall <= 1.0 and 0.0 <= agree <= 1.0


# --- mac_count against torch's FlopCounterMode (FLOPs / 2) on the tested families ---------------

def _flop_counter_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(*inputs)
    return counter.get_total_flops() // 2


def _hf_cases():
    import transformers as T

    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(5, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    return {
        "resnet": (T.ResNetForImageClassification, T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3), (images,)),
        "mobilenet_v2": (T.MobileNetV2ForImageClassification, T.MobileNetV2Config(image_size=64, depth_multiplier=0.25, num_labels=3), (images,)),
        "vit": (T.ViTForImageClassification, T.ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=64, num_labels=3), (images,)),
        "bert": (T.BertModel, T.BertConfig(**text), (ids, torch.ones_like(ids))),
    }


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2", "vit", "bert"])
def test_mac_count_equals_flop_counter_on_hugging_face_families(name):
    cls, config, inputs = _hf_cases()[name]
    config._attn_implementation = "eager"  # how compress loads them (compress.loading.hf)
    torch.manual_seed(0)
    module = cls(config).eval()
    assert mac_count(module, inputs) == _flop_counter_macs(module, inputs) > 0


@pytest.mark.parametrize("name", ["vit", "bert"])
def test_fused_attention_counts_the_same_as_eager_attention(name):
    # FlopCounterMode counts scaled_dot_product_attention as 0 on CPU (no rule for the CPU kernel);
    # the attention's two matrix products are the same work either way.
    cls, config, inputs = _hf_cases()[name]
    counts = []
    for attention in ("eager", "sdpa"):
        config._attn_implementation = attention
        torch.manual_seed(0)
        counts.append(mac_count(cls(config).eval(), inputs))
    assert counts[0] == counts[1] > 0


def test_mac_count_equals_flop_counter_on_plain_cnns():
    from tiny_models import seeded_cnn

    from compress.models.digits import build_module

    cases = [
        (seeded_cnn(), (torch.randn(3, 1, 8, 8),)),
        (build_module(16), (torch.randn(2, 1, 32, 32),)),
        (nn.Sequential(nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 8, 3, groups=4, stride=2), nn.ConvTranspose2d(8, 4, 3, stride=2),
                       nn.ReLU()), (torch.randn(2, 16, 12, 12),)),
        (nn.Sequential(nn.Conv1d(3, 6, 5), nn.Flatten(), nn.Linear(6 * 12, 4)), (torch.randn(2, 3, 16),)),
    ]
    for module, inputs in cases:
        assert mac_count(module, inputs) == _flop_counter_macs(module, inputs) > 0
