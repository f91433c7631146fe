"""Data specs: where the inputs that measure, calibrate or train a model come from.

- `digits:test`, `digits:train`: scikit-learn's real digits, the bundled model's fixed split.
- `text:heldout`, `text:train`: the English corpus of stdlib docstrings, parts kept apart.
- `text:FILE`: one sentence per line.
- `images:DIR`: an image folder, class subfolders for labels (`compress/data/images.py`).
- `tensors:FILE`: `.safetensors` / `.npz` arrays named by the model's inputs, optional `labels`.
Text needs the model's tokenizer to become `input_ids` / `attention_mask`; images are sized for
the model. Data that does not fit the model is refused naming both shapes (`check_fits`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from compress.errors import UsageError
from compress.model import Model
from compress.config import did_you_mean

# What a data source is for. Training and calibration data must never be the held-out data.
Role = Literal["heldout", "train", "calibration", "synthetic"]
ROLES: tuple[Role, ...] = ("heldout", "train", "calibration", "synthetic")
SPECS = ("digits:test", "digits:train", "text:heldout", "text:train", "text:FILE", "images:DIR", "tensors:FILE")


@dataclass(frozen=True)
class Dataset:
    name: str
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None = None
    texts: tuple[str, ...] = ()
    # Padded text: the index of the attention mask among `inputs`; the [N, T] inputs may then be
    # cut to the longest real sequence of a batch (`padded_batches`).
    mask_input: int | None = None

    def __len__(self) -> int:
        return self.inputs[0].shape[0]

    def head(self, n: int) -> Dataset:
        return self.take(torch.arange(min(n, len(self))))

    def take(self, index: torch.Tensor) -> Dataset:
        """The rows at `index`, in that order."""
        texts = tuple(self.texts[i] for i in index.tolist()) if self.texts else ()
        return Dataset(self.name, tuple(x[index] for x in self.inputs),
                       None if self.labels is None else self.labels[index], texts, self.mask_input)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Dataset]:
        """One pass over the rows in batches of `batch_size` (the last may be smaller); shuffled
        with `seed` when asked. Every data source (real, synthetic) gives batches this way, so the
        fit loop, calibration and evaluation read them alike."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.take(order[start : start + batch_size])

    def trimmed(self) -> Dataset:
        """Padded text cut to the longest real sequence among these rows (the outputs of a masked
        encoder are the same); other data as it is. Training batches of docstring sentences (19 of
        128 tokens on average) run several times faster."""
        if self.mask_input is None or len(self) == 0:
            return self
        width = self.inputs[self.mask_input].shape[1]
        end = max(1, int(self._real_ends().max()))
        if end == width:
            return self
        return replace(self, inputs=tuple(x[:, :end] if x.dim() == 2 and x.shape[1] == width else x for x in self.inputs))

    def _real_ends(self) -> torch.Tensor:
        """Per row, one past the last real position: only trailing padding is ever cut, so
        left-padded text stays whole."""
        mask = self.inputs[self.mask_input]
        return ((mask != 0) * torch.arange(1, mask.shape[1] + 1)).amax(dim=1)

    def padded_batches(self, batch_size: int, trim: bool = True) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """(row index, inputs) per batch, for inference. Padded text is sorted by length and each
        batch cut to its longest real sequence (86% of `text:heldout`'s positions are padding;
        the outputs are the same, as padding is masked); put outputs back with the row index.
        Other data comes in order, uncut."""
        if self.mask_input is None or not trim:
            for start in range(0, len(self), batch_size):
                index = torch.arange(start, min(start + batch_size, len(self)))
                yield index, tuple(x[index] for x in self.inputs)
            return
        order = torch.argsort(self._real_ends(), descending=True, stable=True)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            yield index, self.take(index).trimmed().inputs


# The split a model's own data is trained or calibrated on, by its held-out spec.
TRAIN_SPLITS = {"digits:test": "digits:train", "text:heldout": "text:train"}


@dataclass(frozen=True)
class LengthGrouped:
    """Padded text for training whose shuffled batches each hold sentences of similar length, so a
    batch cut to its longest sentence carries little padding (Hugging Face's `group_by_length`):
    each shuffled chunk of `chunk_batches` batches is sorted by length and cut into batches, and
    the batches are shuffled. On text:train a random batch of 32 is 42.5 tokens wide for sentences
    of 18.8 on average; grouped, about 20. Gives batches the way `Dataset.batches` does."""

    data: Dataset
    chunk_batches: int = 8

    @property
    def name(self) -> str:
        return self.data.name

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Dataset]:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        ends = self.data._real_ends()
        chunk = batch_size * self.chunk_batches
        groups = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[torch.argsort(ends[part], stable=True)]
            groups += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        if shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        for index in groups:
            yield self.data.take(index)


def train_split(heldout_spec: str | None) -> str | None:
    """`digits:train` for `digits:test`, `text:train` for `text:heldout`; None for other data."""
    return TRAIN_SPLITS.get(heldout_spec or "")


def load_data(spec: str, model: Model | None = None, seq_len: int | None = None) -> Dataset:
    """The data `spec` names, shaped for `model` (checked against it when given)."""
    data = _read(spec, model, seq_len)
    if model is not None:
        check_fits(data, model, spec)
    return data


def _read(spec: str, model: Model | None, seq_len: int | None) -> Dataset:
    kind, _, arg = spec.partition(":")
    if kind == "digits" and arg in ("test", "train"):
        from compress.data.digits import load_split

        images, labels = load_split(arg)
        return Dataset(spec, (images,), labels)
    if kind == "text" and arg:
        from compress.data import corpus

        sentences = corpus.corpus(arg) if arg in ("heldout", "train") else corpus.read_sentences(Path(arg))
        tokenizer = None if model is None else model.tokenizer
        if tokenizer is None:
            raise UsageError("data", spec, "text needs a text model's tokenizer; give --reference with the original text model (e.g. minilm)")
        from compress.loading.hf import tokenize

        length = seq_len or model.source.seq_len
        return Dataset(spec, tokenize(tokenizer, sentences, length), None, tuple(sentences), mask_input=1)
    if kind == "images" and arg:
        from compress.data.images import load_images

        pixels, labels = load_images(Path(arg), model, spec)
        return Dataset(spec, (pixels,), labels)
    if kind == "tensors" and arg:
        from compress.data.tensors import load_tensors

        inputs, labels = load_tensors(Path(arg), model, spec)
        return Dataset(spec, inputs, labels)
    raise UsageError("data", spec, f"unknown data spec{did_you_mean(spec, SPECS)}; use one of {', '.join(SPECS)}")


def check_fits(data: Dataset, model: Model, spec: str) -> None:
    """As many inputs as the model takes, each with the example's rank; sizes that differ from the
    example's (many models take any image size or length) are tried on one row. A mismatch is a
    UsageError naming the data's shape and the model's."""
    shapes = ", ".join(f"{n} {list(e.shape)}" for n, e in zip(model.input_names, model.example_inputs))
    if len(data.inputs) != len(model.example_inputs):
        raise UsageError("data", spec, f"gives {len(data.inputs)} input(s) {[list(x.shape) for x in data.inputs]} but {model.name} takes {len(model.example_inputs)}: {shapes}")
    for name, x, example in zip(model.input_names, data.inputs, model.example_inputs):
        if x.dim() != example.dim():
            raise UsageError("data", spec, f"has {name} of shape {list(x.shape)} but {model.name} takes {list(example.shape)} (any batch size)")
    if all(x.shape[1:] == e.shape[1:] for x, e in zip(data.inputs, model.example_inputs)):
        return
    try:
        model(*(x[:1] for x in data.inputs))
    except Exception as exc:  # the model's own error says why; the shapes say what to change
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        given = ", ".join(f"{n} {list(x.shape)}" for n, x in zip(model.input_names, data.inputs))
        raise UsageError("data", spec, f"has {given} but {model.name} takes {shapes} (any batch size); it fails on the data: {cause}") from exc
