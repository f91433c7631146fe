"""Hugging Face model folders (config.json + weights), built offline with `transformers`.

Classification heads (`*ForImageClassification`, `*ForSequenceClassification`) serve the
classification task and export their logits; any other text encoder becomes a `SentenceEncoder`
(mean pooling + L2 normalisation, the sentence-transformers convention); other vision backbones
export their pooled output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import UsageError
from compress.model import DEFAULT_SEQ_LEN, Model, Source, random_inputs

# ImageNet's input size, for vision configs that do not state theirs (ResNetConfig).
DEFAULT_IMAGE_SIZE = 224
IMAGE_INPUTS, TEXT_INPUTS = ("pixel_values",), ("input_ids", "attention_mask")
# A fixed real sentence for text example inputs, so export and bench see the same tokens.
EXAMPLE_SENTENCE = "Return the number of items in a container."


class LogitsOf(nn.Module):
    """Expose `.logits` of a transformers model as a plain tensor, so ONNX has one output. Inputs
    go by name: a decoder's second positional argument is its cache, not the attention mask."""

    def __init__(self, inner: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.inner(**dict(zip(self.input_names, inputs))).logits


class PooledOf(nn.Module):
    """A vision backbone's pooled output, flattened to [batch, features]."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.inner(pixel_values)
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(dim=1)).flatten(1)


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


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights", "Writing model shards"): the library
    reports progress through `log` only. The global switch is restored afterwards. Where torchao is installed (the `inc` extra
    pulls it), transformers imports it while loading, and torchao warns that its CUDA extensions
    do not load on a CPU build: nothing compress uses, so kept off stderr too."""
    import logging

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if was_enabled:
            hf_logging.enable_progress_bar()


def tokenize(tokenizer: Any, sentences: Sequence[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), int64 [len(sentences), seq_len]: padded to seq_len, longer
    sentences truncated."""
    batch = tokenizer(
        list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
    )
    return batch["input_ids"], batch["attention_mask"]


def _quiet(_: str) -> None:
    pass


def own_seq_len(folder: Path) -> int:
    """The length a text model runs at when none is given: DEFAULT_SEQ_LEN, or its longest input
    when that is shorter (max_position_embeddings in config.json)."""
    try:
        longest = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_SEQ_LEN  # load_hf names the unreadable config
    return min(DEFAULT_SEQ_LEN, longest) if isinstance(longest, int) and longest >= 2 else DEFAULT_SEQ_LEN


def load_hf(source: Source, with_weights: bool = True, log: Callable[[str], None] = _quiet) -> Model:
    """The model in the folder `source.ref`; without weights (a saved compress model, whose own
    weights replace them) only config.json is read and the architecture built from it."""
    import transformers

    folder = Path(source.ref)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("model folder", folder, f"config.json cannot be read by transformers ({exc})") from exc
    arch = (config.architectures or [""])[0]
    _check_supported(config, arch or config.model_type, folder)
    # Vision configs name their input channels (ViT, ResNet, ConvNeXt, MobileNet...); text configs do not.
    is_vision = hasattr(config, "num_channels")
    tokenizer = None

    def build(auto_class: Any) -> nn.Module:
        if with_weights:
            return auto_class.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
        return auto_class.from_config(config, attn_implementation="eager")

    try:
        with no_progress_bar():
            if arch.endswith("ForImageClassification"):
                module, task = LogitsOf(build(transformers.AutoModelForImageClassification), IMAGE_INPUTS), "classification"
            elif arch.endswith("ForSequenceClassification"):
                module, task = LogitsOf(build(transformers.AutoModelForSequenceClassification), TEXT_INPUTS), "classification"
            elif is_vision:
                module, task = PooledOf(build(transformers.AutoModel)), "embedding"
            else:
                module, task = SentenceEncoder(build(transformers.AutoModel)), "embedding"
            if not is_vision and _has_tokenizer(folder):
                tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError("model folder", folder, f"transformers cannot build it offline ({exc}); it needs config.json and model.safetensors") from exc
    expected = "pixel_values" if is_vision else "input_ids"
    takes = getattr(next(module.children()), "main_input_name", expected)
    if takes != expected:
        raise UsageError("model folder", folder, f"{arch or config.model_type} takes {takes}; {SUPPORTED}")
    if tokenizer is not None:
        _ensure_pad_token(tokenizer, folder, log)
    inner_config = next(module.children()).config
    if not is_vision and inner_config.pad_token_id is None:
        # Sequence-classification heads of decoders (GPT-2, Llama) find each row's last token by
        # the pad id and refuse batches without one: the id the tokenizer pads with, else EOS.
        inner_config.pad_token_id = tokenizer.pad_token_id if tokenizer is not None else getattr(inner_config, "eos_token_id", None)
    module.eval()
    max_len = getattr(config, "max_position_embeddings", None)
    if not is_vision and max_len is not None and not 2 <= source.seq_len <= max_len:
        raise UsageError("sequence length", source.seq_len, f"this model takes 2 to {max_len} tokens; use e.g. --seq-len {min(DEFAULT_SEQ_LEN, max_len)}")
    if is_vision:
        height, width = _image_size(config, folder)
        shape = source.input_shapes[0] if source.input_shapes else (1, config.num_channels, height, width)
        inputs = random_inputs([shape], source.seed)
        return _checked(Model(module, inputs, IMAGE_INPUTS, task, source, name=folder.name), arch or config.model_type, folder)
    if tokenizer is not None:
        inputs = tokenize(tokenizer, [EXAMPLE_SENTENCE], source.seq_len)
    else:
        ids = torch.randint(5, config.vocab_size, (1, source.seq_len), generator=torch.Generator().manual_seed(source.seed))
        inputs = (ids, torch.ones_like(ids))
    return _checked(Model(module, inputs, TEXT_INPUTS, task, source, name=folder.name,
                          eval_data="text:heldout" if tokenizer is not None else None, tokenizer=tokenizer), arch or config.model_type, folder)


def _checked(model: Model, arch: str, folder: Path) -> Model:
    """The model must run on its example inputs: an architecture compress cannot drive fails here,
    named, rather than as an error deep inside a pass."""
    try:
        model(*model.example_inputs)
    except Exception as exc:  # transformers fails in many ways on inputs a model does not take
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        shapes = ", ".join(f"{n} {list(x.shape)}" for n, x in zip(model.input_names, model.example_inputs))
        raise UsageError("model folder", folder, f"{arch} fails on example inputs {shapes} ({type(exc).__name__}: {cause}); {SUPPORTED}") from exc
    return model


def _image_size(config: Any, folder: Path) -> tuple[int, int]:
    """(height, width) of example images: the config's image_size (the size the model was built
    for); else what the folder's image processor produces (preprocessor_config.json), so the
    exported graph takes the images `images:DIR` gives it; else ImageNet's 224."""
    size = getattr(config, "image_size", None)
    if size is None:
        size = _processor_size(folder) or DEFAULT_IMAGE_SIZE
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _processor_size(folder: Path) -> int | tuple[int, int] | None:
    path = folder / "preprocessor_config.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return None  # a broken processor config is reported where images are read
    size = settings.get("crop_size") if settings.get("do_center_crop") else None
    size = size or settings.get("size")
    if isinstance(size, int):
        return size
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, dict) and "shortest_edge" in size:  # resized (and cropped) to a square
        return int(size["shortest_edge"])
    return None


SUPPORTED = ("compress supports text models that take input_ids (BERT, RoBERTa, GPT-2, ...), image models that take "
             "pixel_values (ViT, ResNet, ConvNeXt, ...), and their *ForSequenceClassification / *ForImageClassification heads")
# Config attributes that hold the sub-models of a multimodal architecture (CLIP, BLIP, LLaVA, ...).
MULTIMODAL_PARTS = ("text_config", "vision_config", "audio_config", "speech_config", "qformer_config")


def _check_supported(config: Any, arch: str, folder: Path) -> None:
    if getattr(config, "is_encoder_decoder", False):
        raise UsageError("model folder", folder, f"{arch} is an encoder-decoder model; {SUPPORTED}")
    parts = [p.removesuffix("_config") for p in MULTIMODAL_PARTS if getattr(config, p, None) is not None]
    if parts:
        raise UsageError("model folder", folder, f"{arch} is a multimodal model ({' + '.join(parts)}); {SUPPORTED}")


def _ensure_pad_token(tokenizer: Any, folder: Path, log: Callable[[str], None]) -> None:
    """Batches are padded to --seq-len; a tokenizer without a pad token (GPT-2, Llama) pads with
    its EOS (else unk) token, which attention_mask hides from the model and from pooling."""
    if tokenizer.pad_token is not None:
        return
    for role in ("eos_token", "unk_token"):
        token = getattr(tokenizer, role)
        if token is not None:
            tokenizer.pad_token = token
            log(f"the tokenizer of {folder.name} has no pad token: padding with its {role.removesuffix('_token')} token {token!r} (masked out by attention_mask)")
            return
    raise UsageError("tokenizer", folder, "has no pad, EOS or unk token to pad batches with; add \"pad_token\" to its tokenizer_config.json")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
