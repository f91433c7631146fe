"""Hugging Face model folders (config.json + weights), built offline with `transformers`.

Classification heads (`*ForImageClassification`, `*ForSequenceClassification`) serve the
classification task and export their logits; any other text encoder becomes a sentence encoder
(mean pooling + L2 normalisation); other vision backbones export their pooled output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress.errors import UsageError
from compress.model import Model, Source


class LogitsOf(nn.Module):
    """Expose `.logits` of a transformers model as a plain tensor, so ONNX has one output."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.inner(*inputs).logits


class PooledOf(nn.Module):
    """A vision backbone's pooled output, flattened to [batch, features]."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.inner(pixel_values)
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(dim=1)).flatten(1)


def load_hf(source: Source) -> Model:
    import transformers

    folder = Path(source.ref)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("model folder", folder, f"config.json cannot be read by transformers ({exc})") from exc
    arch = (config.architectures or [""])[0]
    is_vision = hasattr(config, "num_channels") or hasattr(config, "image_size")
    kwargs = {"local_files_only": True, "attn_implementation": "eager"}
    try:
        if arch.endswith("ForImageClassification"):
            module, task = LogitsOf(transformers.AutoModelForImageClassification.from_pretrained(folder, **kwargs)), "classification"
        elif arch.endswith("ForSequenceClassification"):
            module, task = LogitsOf(transformers.AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)), "classification"
        elif is_vision:
            module, task = PooledOf(transformers.AutoModel.from_pretrained(folder, **kwargs)), "embedding"
        else:
            from compress.models.minilm import SentenceEncoder

            module, task = SentenceEncoder(transformers.AutoModel.from_pretrained(folder, **kwargs)), "embedding"
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("model folder", folder, f"transformers cannot build it offline ({exc}); it needs config.json and model.safetensors") from exc
    module.eval()
    if is_vision:
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        shape = source.input_shapes[0] if source.input_shapes else (1, config.num_channels, size, size)
        inputs = (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
        return Model(module, inputs, ("pixel_values",), task, source, name=folder.name)
    tokenizer = _tokenizer(folder)
    if tokenizer is not None:
        from compress.models.minilm import tokenize

        inputs = tokenize(tokenizer, ["Return the number of items in a container."], source.seq_len)
    else:
        ids = torch.randint(5, config.vocab_size, (1, source.seq_len), generator=torch.Generator().manual_seed(0))
        inputs = (ids, torch.ones_like(ids))
    return Model(module, inputs, ("input_ids", "attention_mask"), task, source, name=folder.name,
                 eval_data="text:heldout" if tokenizer is not None else None, tokenizer=tokenizer)


def _tokenizer(folder: Path):
    if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    import transformers

    return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
