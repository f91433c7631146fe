"""`Model`: the one thing that moves from pass to pass, and how it is saved and rebuilt as data.

A Model is the torch module plus what every pass, the export and the measurements need to know
about it: example inputs and their names, the task it serves, the held-out data its quality is
measured on, and where it came from (`Source`) together with the structural edits applied since
(`edits`, replayed through the table in compress.edits). Saving writes only data: `model.safetensors` + `model.json`. Loading rebuilds the
architecture from the source, replays the edits, then loads the weights (transformers'
`config.pruned_heads` habit), so no pickled code is ever needed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from safetensors.torch import save_file
from torch import nn

from compress.atomic import atomic_path, umask, write_bytes, write_text
from compress.errors import UsageError

Task = Literal["classification", "embedding"]
SAVED_FORMAT_VERSION = 1
WEIGHTS_FILE, META_FILE = "model.safetensors", "model.json"
# A model saved from a Hugging Face folder keeps that folder's config and tokenizer files here, so
# it rebuilds after the original folder is moved or deleted (the weights are model.safetensors).
HF_DIR = "hf"
# A text model's sequence length when none is given (--seq-len): BERT-family encoders' usual 128.
DEFAULT_SEQ_LEN = 128
# Config, tokenizer (tokenizer.json, vocab.txt, merges.txt, sentencepiece *.model) and
# image-processor files: every small top-level file that is not weights or a weights index.
HF_FILE_SUFFIXES = (".json", ".txt", ".model")


@dataclass(frozen=True)
class Source:
    """How to build the original architecture again: a bundled name, a `pkg.module:factory`, or an
    HF directory, with the settings that shaped its example inputs."""

    kind: Literal["bundled", "factory", "hf"]
    ref: str
    weights: str | None = None
    input_shapes: tuple[tuple[int, ...], ...] = ()
    # The one sequence length of a text model: its example inputs, its text data and its bench.
    seq_len: int = DEFAULT_SEQ_LEN
    task: Task | None = None
    # The tensor chosen (--output) from a forward that returns a dict, tuple or dataclass.
    output: str | None = None
    # Seed of random example inputs (shapes given with --input-shape, text models without a
    # tokenizer): the run's seed, kept so a rebuild makes the same inputs.
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "input_shapes": [list(s) for s in self.input_shapes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        return cls(**{**data, "input_shapes": tuple(tuple(s) for s in data.get("input_shapes", ()))})


@dataclass(frozen=True)
class Model:
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    task: Task
    source: Source
    name: str
    # Data spec (see compress.data) whose inputs measure quality when none is given.
    eval_data: str | None = None
    # Text models: the tokenizer that turns sentences into `input_names` tensors.
    tokenizer: Any = field(default=None, repr=False, compare=False)
    # Structural edits since `source` (pruned channels, heads, ...), each a JSON-able dict that
    # names its kind; replayed in order by `rebuild`. Empty until a pass changes the architecture.
    edits: tuple[dict[str, Any], ...] = ()

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch is dynamic on every input and the output; text inputs also have a dynamic length."""
        axes = {name: {0: "batch"} for name in self.input_names}
        for name, tensor in zip(self.input_names, self.example_inputs):
            if tensor.dtype == torch.long and tensor.dim() == 2:
                axes[name][1] = "sequence"
        axes["output"] = {0: "batch"}
        return axes

    def replace(self, **changes: Any) -> Model:
        return dataclasses.replace(self, **changes)

    def copy(self) -> Model:
        """A deep copy of the module, so a pass can change it without touching its input."""
        return self.replace(module=copy.deepcopy(self.module))

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        return self.module(*inputs)


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> tuple[torch.Tensor, ...]:
    """N(0, 1) example inputs of `shapes`, drawn from `seed` (the run's), so a rebuild from the
    same Source gives the same inputs."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tuple(shape), generator=generator) for shape in shapes)


def save(model: Model, folder: str | Path) -> Path:
    """Write `model.safetensors` and `model.json` into `folder` (each atomically), and for a
    Hugging Face source its config and tokenizer files under `hf/`."""
    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        # The file writer reads the tensors' own memory; safetensors' bytes API held two more
        # copies of the weights (200 MB at once for MiniLM). It leaves the file 0600: the usual
        # permissions again after.
        save_file(_alone_in_storage(model.module.state_dict()), tmp)
        os.chmod(tmp, 0o666 & ~umask())
    source = model.source
    if source.kind == "hf":
        _copy_hf_files(Path(source.ref), folder / HF_DIR)
        source = dataclasses.replace(source, ref=HF_DIR)  # relative to the saved folder
    meta = {
        "format_version": SAVED_FORMAT_VERSION,
        "name": model.name,
        "task": model.task,
        "source": source.to_dict(),
        "edits": list(model.edits),
    }
    write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def _alone_in_storage(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` as safetensors takes it, each tensor contiguous and alone in its storage; only a
    tied (shared) weight or a view is copied, not every weight."""
    seen: set[int] = set()
    alone = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        whole = tensor.is_contiguous() and tensor.storage_offset() == 0 and storage.nbytes() == tensor.nbytes
        alone[key] = tensor if whole and storage.data_ptr() not in seen else tensor.contiguous().clone()
        seen.add(storage.data_ptr())
    return alone


def _copy_hf_files(origin: Path, target: Path) -> None:
    if origin.resolve() == target.resolve():
        return
    for path in sorted(origin.iterdir()):
        if path.is_file() and path.suffix in HF_FILE_SUFFIXES and not path.name.endswith(".index.json"):
            write_bytes(target / path.name, path.read_bytes())


def is_saved_model(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file() and (Path(path) / WEIGHTS_FILE).is_file()


def load_saved(
    folder: str | Path,
    build: Callable[[Source], Model],
    edits: Mapping[str, Callable[[Model, dict[str, Any]], Model]],
) -> Model:
    """Rebuild a saved model: `build(source)` (the architecture; its weights are replaced), replay
    each edit with `edits[kind]` (the table in compress.edits), then load the saved weights strictly."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        version = meta["format_version"]
        source = Source.from_dict(meta["source"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError("saved model", folder / META_FILE, f"is not a compress model.json ({exc}); save it again") from exc
    if version != SAVED_FORMAT_VERSION:
        raise UsageError("saved model format_version", version, f"this compress reads version {SAVED_FORMAT_VERSION}")
    if source.kind == "hf" and not Path(source.ref).is_absolute():
        source = dataclasses.replace(source, ref=str((folder / source.ref).resolve()))
    model = build(source)
    recorded = meta.get("edits", [])
    for edit in recorded:
        kind = edit.get("kind") if isinstance(edit, dict) else None
        if kind not in edits:
            raise UsageError("saved model edit", kind, f"this compress knows {sorted(edits) or 'no edits'}; upgrade compress")
        model = edits[kind](model, edit)
    load_state_dict(model.module, load_file(str(folder / WEIGHTS_FILE)), folder / WEIGHTS_FILE)
    return model.replace(module=model.module.eval(), edits=tuple(recorded), name=meta.get("name", model.name))


def load_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load strictly; a mismatch names the missing and unexpected keys and the differing shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} file {list(state[k].shape)} vs model {list(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {_first(items)}" for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if items]
        raise UsageError("weights", path, f"do not fit the model: {'; '.join(parts)}; use the factory these weights were saved from")
    module.load_state_dict(state, strict=True)


def _first(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', and {len(items) - n} more' if len(items) > n else ''}]"
