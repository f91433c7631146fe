"""Turn what the user pointed at into a `Model`: a bundled name, `pkg.module:factory` with
`--weights`, a Hugging Face model folder, or a folder saved by compress.

Weights are data: safetensors, or a `.pt` state dict read with `weights_only=True`. A pickled full
module can run code when unpickled, so it is refused unless the user passes `--trust-pickle`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from compress.edits import EDITS
from compress.errors import UsageError
from compress.model import Model, Source, Task, is_saved_model, load_saved, load_state_dict
from compress.config import did_you_mean

BUNDLED = ("digits", "minilm")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PICKLE_PREFIX = "pickle:"  # the source of a module unpickled with --trust-pickle: recorded, not rebuildable


def load(
    spec: str,
    *,
    weights: str | Path | None = None,
    input_shapes: tuple[tuple[int, ...], ...] = (),
    seq_len: int = 128,
    task: Task | None = None,
    trust_pickle: bool = False,
) -> Model:
    """Load the model `spec` names; every way it can be wrong is a UsageError naming the fix."""
    path = Path(spec)
    if spec in BUNDLED:
        source = Source("bundled", spec, input_shapes=input_shapes, seq_len=seq_len, task=task)
    elif path.is_dir() and is_saved_model(path):
        return load_saved(path, functools.partial(build, architecture_only=True), EDITS)
    elif path.is_dir() and (path / "config.json").is_file():
        source = Source("hf", str(path.resolve()), input_shapes=input_shapes, seq_len=seq_len, task=task)
    elif path.is_file():
        return _load_file(path, trust_pickle, input_shapes, seq_len, task)
    elif ":" in spec and not path.exists():
        source = Source("factory", spec, input_shapes=input_shapes, seq_len=seq_len, task=task)
    else:
        raise UsageError(
            "model", spec,
            f"not found{did_you_mean(spec, BUNDLED)}; give a bundled name ({', '.join(BUNDLED)}), pkg.module:factory with --weights FILE, "
            "a Hugging Face model folder, or a folder saved by compress",
        )
    if weights is not None:
        source = dataclasses.replace(source, weights=str(Path(weights).resolve()))
        _check_weights_path(Path(weights))
    return build(source, trust_pickle=trust_pickle)


def build(source: Source, *, trust_pickle: bool = False, architecture_only: bool = False) -> Model:
    """Build the original architecture `source` describes, with its weights; `architecture_only`
    (a saved model, whose own weights replace them) needs neither the original weights file nor
    the Hugging Face folder's weights."""
    if source.kind == "bundled":
        module = importlib.import_module(f"compress.models.{source.ref}")
        model = module.load(source)
    elif source.kind == "hf":
        from compress.loading.hf import load_hf

        model = load_hf(source, with_weights=not architecture_only)
    else:
        model = _build_factory(source)
    if source.weights is not None and not architecture_only:
        load_state_dict(model.module, read_weights(Path(source.weights), trust_pickle), Path(source.weights))
    if source.task is not None and source.task != model.task:
        model = model.replace(task=source.task)
    return model.replace(module=model.module.eval())


def _build_factory(source: Source) -> Model:
    if source.ref.startswith(PICKLE_PREFIX):
        raise UsageError("model source", source.ref, "a pickled module cannot be rebuilt from data; give its factory with --model pkg.module:factory")
    module_name, _, attr = source.ref.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError("model factory", source.ref, f"cannot import it ({exc}); check the pkg.module:function spelling and that the package is installed") from exc
    built = factory()
    module, example_inputs = (built if isinstance(built, tuple) else (built, None))
    if not isinstance(module, nn.Module):
        raise UsageError("model factory", source.ref, f"returned {type(module).__name__}; it must return an nn.Module or (module, example_inputs)")
    if source.input_shapes:
        example_inputs = tuple(torch.randn(shape, generator=torch.Generator().manual_seed(0)) for shape in source.input_shapes)
    if example_inputs is None:
        raise UsageError("input shape", "none given", f"pass --input-shape 1,3,32,32 or make {source.ref} return (module, example_inputs)")
    example_inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    names = ("input",) if len(example_inputs) == 1 else tuple(f"input_{i}" for i in range(len(example_inputs)))
    return Model(module, example_inputs, names, source.task or "classification", source, name=attr)


def _load_file(path: Path, trust_pickle: bool, input_shapes, seq_len, task) -> Model:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise UsageError("model", path, "is an ONNX file; compress works on PyTorch checkpoints (use `compress bench` or `compress eval` for ONNX)")
    if suffix == ".safetensors":
        raise UsageError("model", path, "holds weights only; pass the architecture too: --model pkg.module:factory --weights " + str(path))
    if suffix not in (".pt", ".pth", ".bin"):
        raise UsageError("model", path, f"unknown file type {suffix or '(none)'}; give a bundled name, pkg.module:factory, a model folder, or a .pt module with --trust-pickle")
    if not trust_pickle:
        raise UsageError("model", path, "a pickled checkpoint can run code when loaded; pass --trust-pickle if you trust it, or give its factory and --weights")
    if not zipfile.is_zipfile(path):
        raise UsageError("model", path, "truncated or corrupt checkpoint (not a torch.save archive); save it again")
    try:
        module = torch.load(path, weights_only=False, map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, AttributeError, ModuleNotFoundError) as exc:
        raise UsageError("model", path, f"cannot be unpickled ({type(exc).__name__}: {exc}); is it complete and made by torch.save?") from exc
    if not isinstance(module, nn.Module):
        raise UsageError("model", path, f"holds a {type(module).__name__}, not a module; give its factory with --model pkg.module:factory --weights {path}")
    if not input_shapes:
        raise UsageError("input shape", "none given", "a pickled module carries no example inputs; pass --input-shape, e.g. 1,3,32,32")
    inputs = tuple(torch.randn(shape, generator=torch.Generator().manual_seed(0)) for shape in input_shapes)
    names = ("input",) if len(inputs) == 1 else tuple(f"input_{i}" for i in range(len(inputs)))
    # A pickled module cannot be rebuilt from data; its source records the file for the report only.
    source = Source("factory", f"{PICKLE_PREFIX}{path.resolve()}", input_shapes=input_shapes, seq_len=seq_len, task=task)
    return Model(module.eval(), inputs, names, task or "classification", source, name=path.stem)


def _check_weights_path(path: Path) -> None:
    if not path.is_file():
        raise UsageError("weights", path, "file not found; check the path")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise UsageError("weights", path, f"unknown weights type {path.suffix or '(none)'}; use .safetensors or a .pt state dict")


def read_weights(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a `.pt` file read with `weights_only=True`."""
    _check_weights_path(path)
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError("weights", path, f"truncated or corrupt safetensors file ({exc}); write it again") from exc
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise UsageError("weights", path, "truncated or corrupt checkpoint (not a torch.save archive); save it again with torch.save(model.state_dict(), ...)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise UsageError("weights", path, "holds pickled objects beyond tensors (a full module?); save model.state_dict() instead, or pass --trust-pickle") from exc
        state = torch.load(path, weights_only=False, map_location="cpu")
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as exc:
        raise UsageError("weights", path, f"truncated or corrupt checkpoint ({type(exc).__name__}); save it again with torch.save(model.state_dict(), ...)") from exc
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError("weights", path, "is not a state dict of tensors; save model.state_dict()")
    return dict(state)
