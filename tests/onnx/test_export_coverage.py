"""Export + onnxruntime parity across the architectures compress will be asked to handle:
transformers' vision and text families (tiny random configs, built here, nothing fetched) and
plain-torch CNNs with channel concat, depthwise and grouped convolutions."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

from compress.data.specs import Dataset
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.onnx.parity import check_parity

TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
HF_CASES = {
    "resnet": (T.ResNetForImageClassification, T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)),
    "mobilenet_v2": (T.MobileNetV2ForImageClassification, T.MobileNetV2Config(image_size=64, depth_multiplier=0.25, num_labels=3)),
    "efficientnet": (T.EfficientNetForImageClassification,
                     T.EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=3)),
    "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig(image_size=64, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=3)),
    "vit": (T.ViTForImageClassification, T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64, num_labels=3)),
    "bert": (T.BertModel, T.BertConfig(**TEXT)),
    "distilbert": (T.DistilBertModel, T.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64)),
    "roberta": (T.RobertaModel, T.RobertaConfig(**TEXT)),
}


@pytest.mark.parametrize("name", sorted(HF_CASES))
def test_hugging_face_families_export_with_parity(name, tmp_path):
    cls, config = HF_CASES[name]
    torch.manual_seed(0)
    cls(config).eval().save_pretrained(tmp_path / name)
    model = load(str(tmp_path / name), seq_len=16)
    exported = export_onnx(model, tmp_path / f"{name}.onnx")
    assert exported.opset == 17
    g = torch.Generator().manual_seed(1)
    if model.input_names == ("pixel_values",):
        data = Dataset("random images", (torch.randn(3, *model.example_inputs[0].shape[1:], generator=g),))
    else:
        ids = torch.randint(5, 100, (3, 16), generator=g)
        data = Dataset("random ids", (ids, torch.ones_like(ids)))
    parity = check_parity(model, exported.path, data, tolerance=1e-4)
    assert parity.passed, parity


class ConcatDepthwiseGrouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = torch.relu(self.bn(self.depthwise(x)))
        return self.head(self.grouped(x).mean(dim=(2, 3)))


def test_plain_cnn_with_concat_depthwise_and_grouped_convs(tmp_path):
    torch.manual_seed(0)
    module = ConcatDepthwiseGrouped().eval()
    model = load("tiny_models:cnn").replace(module=module, example_inputs=(torch.randn(1, 3, 16, 16),))
    exported = export_onnx(model, tmp_path / "cnn.onnx")
    data = Dataset("random", (torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)),))
    assert check_parity(model, exported.path, data, tolerance=1e-4).passed
