"""Transformer encoder surgery: remove whole attention heads and FFN neurons.

transformers v5 dropped `prune_heads` (PR #41417), so compress owns the slicing. A head is rows
[h*d, (h+1)*d) of the query, key and value projections and the same columns of the attention
output projection; an FFN neuron j is row j of the up projection and column j of the down
projection (Michel et al. 2019; Kwon et al. 2022). The hidden size is never changed, so
embeddings, LayerNorms and the pooled output keep their width.

Every attribute the forward reads is kept consistent: the head count (`num_attention_heads` /
`n_heads`), `all_head_size` where the module has one; the head size never changes. When every
layer keeps the same widths and the config can say so, the config is updated too, so the model
saves as a plain Hugging Face folder (`save_plain_folder`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.errors import UsageError


@dataclass(frozen=True)
class Layout:
    """Where the pieces of one encoder layer live, relative to the layer module."""

    family: str
    attention: str
    query: str
    key: str
    value: str
    output: str
    up: str
    down: str
    heads_attr: str
    head_size_attr: str
    # Config fields that describe the widths (None: the config cannot describe fewer heads).
    heads_config: str | None
    ffn_config: str


LAYOUTS = (
    # BERT, RoBERTa and the rest of the BERT family (MiniLM is a BertModel).
    Layout("bert", "attention.self", "attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense", "num_attention_heads", "attention_head_size",
           None, "intermediate_size"),
    Layout("distilbert", "attention", "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
           "ffn.lin1", "ffn.lin2", "n_heads", "attention_head_size", None, "hidden_dim"),
    # ViT in transformers v5 (ViTAttention with q/k/v/o_proj, ViTMLP); head size comes from config.head_dim.
    Layout("vit", "attention", "attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj",
           "mlp.fc1", "mlp.fc2", "num_attention_heads", "head_dim", "num_attention_heads", "intermediate_size"),
)


@dataclass(frozen=True)
class EncoderLayer:
    name: str
    module: nn.Module
    layout: Layout

    def part(self, path: str) -> nn.Module:
        return self.module.get_submodule(path)

    @property
    def heads(self) -> int:
        return getattr(self.part(self.layout.attention), self.layout.heads_attr)

    @property
    def head_size(self) -> int:
        return getattr(self.part(self.layout.attention), self.layout.head_size_attr)

    @property
    def ffn(self) -> int:
        return self.part(self.layout.up).out_features


def encoder_layers(module: nn.Module, ignore: Iterable[str] = ()) -> list[EncoderLayer]:
    """Every encoder layer whose structure matches a known layout, minus those an ignore glob names."""
    ignore = tuple(ignore)
    found = []
    for name, m in module.named_modules():
        layout = next((lay for lay in LAYOUTS if _has(m, lay)), None)
        if layout is not None and not any(fnmatch.fnmatch(name, g) for g in ignore):
            found.append(EncoderLayer(name, m, layout))
    return found


def unknown_attention(module: nn.Module, layers: list[EncoderLayer], ignore: Iterable[str] = ()) -> str | None:
    """The first attention module outside a known layout (named like HF names them), if any."""
    known = {id(layer.part(layer.layout.attention)) for layer in layers}
    known |= {id(m) for layer in layers for m in layer.module.modules()}
    for name, m in module.named_modules():
        if name and type(m).__name__.endswith("Attention") and id(m) not in known and not any(fnmatch.fnmatch(name, g) for g in ignore):
            return f"{name} ({type(m).__name__})"
    return None


def _has(module: nn.Module, layout: Layout) -> bool:
    try:
        parts = [module.get_submodule(p) for p in (layout.query, layout.key, layout.value, layout.output, layout.up, layout.down)]
        attention = module.get_submodule(layout.attention)
    except AttributeError:
        return False
    return all(isinstance(p, nn.Linear) for p in parts) and hasattr(attention, layout.heads_attr) and hasattr(attention, layout.head_size_attr)


def unit_scores(layers: list[EncoderLayer], importance: str) -> dict[str, torch.Tensor]:
    """Per layer, one score per head (`NAME:heads`) and per FFN neuron (`NAME:ffn`), each
    normalised by its mean. l1/l2: the p-norm^p of the unit's weights; taylor: sum |w * dL/dw|
    over them (first-order Taylor, Molchanov et al. 2019), from gradients already accumulated."""
    if importance == "bn_scale":
        raise UsageError("--importance", "bn_scale", "transformer encoders have no BatchNorm; use l1, l2 or taylor")
    scores = {}
    for layer in layers:
        lay, d = layer.layout, layer.head_size
        per_row = sum(_units(layer.part(p).weight, importance, 0) for p in (lay.query, lay.key, lay.value))
        per_row = per_row + _units(layer.part(lay.output).weight, importance, 1)
        scores[f"{layer.name}:heads"] = _normalise(per_row.view(layer.heads, d).sum(1))
        ffn = _units(layer.part(lay.up).weight, importance, 0) + _units(layer.part(lay.down).weight, importance, 1)
        scores[f"{layer.name}:ffn"] = _normalise(ffn)
    return scores


def _units(weight: torch.Tensor, importance: str, dim: int) -> torch.Tensor:
    """One score per index along `dim` (0: output rows, 1: input columns)."""
    w = weight.detach()
    if importance == "taylor":
        grad = weight.grad if weight.grad is not None else torch.zeros_like(w)
        per_weight = (w * grad).abs()
    else:
        per_weight = w.abs().pow(1 if importance == "l1" else 2)
    return per_weight.sum(1 - dim)


def _normalise(score: torch.Tensor) -> torch.Tensor:
    return score / score.mean().clamp(min=1e-12)


def apply(module: nn.Module, kept: Mapping[str, Mapping[str, list[int]]]) -> nn.Module:
    """Keep, per layer name, the `heads` and `ffn` indices given; the rest are removed."""
    layers = {layer.name: layer for layer in encoder_layers(module)}
    for name, keep in kept.items():
        if name not in layers:
            raise UsageError("pruned encoder layer", name, "is not an encoder layer of this model; the model differs from the one it was pruned from")
        _prune_layer(layers[name], keep["heads"], keep["ffn"])
    _sync_config(module, list(layers.values()))
    return module


def _prune_layer(layer: EncoderLayer, heads: list[int], ffn: list[int]) -> None:
    lay, d = layer.layout, layer.head_size
    if not heads:
        raise UsageError("pruned heads", layer.name, "would keep no head; an attention layer needs at least one")
    rows = torch.tensor([h * d + i for h in heads for i in range(d)], dtype=torch.long)
    for path in (lay.query, lay.key, lay.value):
        _replace(layer.module, path, _slice(layer.part(path), rows, dim=0))
    _replace(layer.module, lay.output, _slice(layer.part(lay.output), rows, dim=1))
    attention = layer.part(lay.attention)
    setattr(attention, lay.heads_attr, len(heads))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(heads) * d
    neurons = torch.tensor(ffn, dtype=torch.long)
    _replace(layer.module, lay.up, _slice(layer.part(lay.up), neurons, dim=0))
    _replace(layer.module, lay.down, _slice(layer.part(lay.down), neurons, dim=1))


def _slice(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` of its output (dim 0) or input (dim 1) features."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None:
        bias = bias.detach().index_select(0, index).clone() if dim == 0 else bias.detach().clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    return new


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def hf_model(module: nn.Module):
    """The transformers PreTrainedModel inside compress's wrappers, or None."""
    from transformers import PreTrainedModel

    return next((m for m in module.modules() if isinstance(m, PreTrainedModel)), None)


def plain_config_fields(layers: list[EncoderLayer]) -> dict[str, int] | None:
    """The config fields that describe the pruned widths, or None when no config can: layers
    differ, or heads were removed from a family whose head size is computed as hidden / heads."""
    if not layers or len({(layer.heads, layer.ffn) for layer in layers}) != 1:
        return None
    layout, first = layers[0].layout, layers[0]
    config = first.part(layout.attention).config
    fields = {layout.ffn_config: first.ffn}
    if first.heads != _original_heads(config, layout):
        if layout.heads_config is None:
            return None
        fields[layout.heads_config] = first.heads
        fields["head_dim"] = first.head_size
    return fields


def _original_heads(config, layout: Layout) -> int:
    return getattr(config, "n_heads", None) if layout.family == "distilbert" else config.num_attention_heads


def _sync_config(module: nn.Module, layers: list[EncoderLayer]) -> None:
    """Write the uniform widths into the shared config, so it describes the module it sits in."""
    fields = plain_config_fields(layers)
    inner = hf_model(module)
    if fields is None or inner is None:
        return
    for key, value in fields.items():
        setattr(inner.config, key, value)


def save_plain_folder(module: nn.Module, folder: Path, tokenizer=None) -> Path | None:
    """`save_pretrained` of the inner transformers model when its config describes it (uniform
    widths), so `AutoModel.from_pretrained(folder)` loads it without compress; else None."""
    inner = hf_model(module)
    layers = encoder_layers(module)
    if inner is None or plain_config_fields(layers) is None:
        return None
    from compress.loading.hf import no_progress_bar

    with no_progress_bar():  # transformers' "Writing model shards" bar: progress is compress's to report
        inner.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    return folder
