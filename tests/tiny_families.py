"""Tiny random configs of the architecture families compress is tested on: transformers'
vision and text models (built here, nothing fetched) and a plain CNN with channel concat,
depthwise and grouped convolutions. Shared by the export and the pruning coverage tests."""

from __future__ import annotations

import torch
import transformers as T
from torch import nn

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


def saved_family(name: str, folder) -> tuple:
    """The tiny `name` model saved as a Hugging Face folder under `folder` and loaded by compress,
    with three random inputs of its kind (images, or token ids with a full mask) as a Dataset."""
    from compress.data.specs import Dataset
    from compress.loading.checkpoint import load

    cls, config = HF_CASES[name]
    torch.manual_seed(0)
    cls(config).eval().save_pretrained(folder / name)
    model = load(str(folder / name), seq_len=16)
    g = torch.Generator().manual_seed(1)
    if model.input_names == ("pixel_values",):
        return model, Dataset("random images", (torch.randn(3, *model.example_inputs[0].shape[1:], generator=g),))
    ids = torch.randint(5, 100, (3, 16), generator=g)
    return model, Dataset("random ids", (ids, torch.ones_like(ids)))


# A WordPiece vocabulary for the tiny text families (vocab_size 100): specials, a placeholder,
# single characters (the inventory a WordPiece vocabulary starts with), then words by "frequency".
TINY_VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "b", "c"] + [
    "the", "of", "and", "to", "in", "is", "for", "it", "on", "with", "as", "be", "this", "that", "by", "from", "or", "an",
    "are", "at", "not", "can", "will", "if", "which", "has", "all", "one", "but", "new", "value", "return", "file", "name",
    "list", "data", "object", "string", "number", "type", "default", "function", "class", "module", "path", "set", "key",
    "error", "time", "line", "call", "method", "given", "first", "each", "when", "used", "use", "only", "its", "any",
    "may", "more", "also", "into", "than", "other", "same", "where", "then", "some", "these", "there", "##s", "##ed",
    "##ing", "##er", "##ly", "##al", "##es", "##ion", "##ic", "##ity", "##able", "##ment", "##ness", "##ize", "##ful", "##less",
]


def saved_text_family(folder) -> tuple:
    """The tiny BERT saved with a WordPiece tokenizer of `TINY_VOCAB`, loaded by compress as a
    text encoder (sequence length 16), and the tokenizer's ids of a few sentences as a Dataset."""
    from transformers import BertTokenizer

    from compress.data.specs import Dataset
    from compress.loading.checkpoint import load
    from compress.loading.hf import tokenize

    assert len(TINY_VOCAB) == HF_CASES["bert"][1].vocab_size
    cls, config = HF_CASES["bert"]
    torch.manual_seed(0)
    path = folder / "bert_text"
    cls(config).eval().save_pretrained(path)
    BertTokenizer(vocab={token: i for i, token in enumerate(TINY_VOCAB)}).save_pretrained(path)
    model = load(str(path), seq_len=16)
    sentences = ["the value of the file is returned.", "each list has a name and a type.", "it can be used with any object."]
    return model, Dataset("sentences", tokenize(model.tokenizer, sentences, 16), mask_input=1)
