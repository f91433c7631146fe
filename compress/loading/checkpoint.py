"""Turn what the user pointed at into a `Model`: a bundled name, `pkg.module:factory` with
`--weights`, a Hugging Face model folder, or a folder saved by compress.

Weights are data: safetensors, or a `.pt` state dict read with `weights_only=True`. A pickled full
module can run code when unpickled, so it is refused unless the user passes `--trust-pickle`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from compress.edits import EDITS
from compress.errors import UsageError
from compress.model import DEFAULT_SEQ_LEN, Model, Source, random_inputs, Task, is_saved_model, load_saved, load_state_dict
from compress.config import did_you_mean
from compress.loading.outputs import single_output

BUNDLED = ("digits", "minilm")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PICKLE_PREFIX = "pickle:"  # the source of a module unpickled with --trust-pickle: recorded, not rebuildable


def _quiet(_: str) -> None:
    pass


def load(
    spec: str,
    *,
    weights: str | Path | None = None,
    input_shapes: tuple[tuple[int, ...], ...] = (),
    seq_len: int | None = None,
    task: Task | None = None,
    trust_pickle: bool = False,
    output: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = _quiet,
) -> Model:
    """Load the model `spec` names; every way it can be wrong is a UsageError naming the fix.
    `output` chooses one tensor of a factory's or pickled module's dict / tuple / dataclass output."""
    length = DEFAULT_SEQ_LEN if seq_len is None else seq_len  # None: the model's own (Source.seq_len)
    path = Path(spec)
    if spec in BUNDLED:
        _refuse_options(f"the bundled model {spec}", weights, input_shapes, output)
        source = Source("bundled", spec, input_shapes=input_shapes, seq_len=length, task=task, seed=seed)
    elif path.is_dir() and is_saved_model(path):
        _refuse_options(f"the saved model {path}", weights, input_shapes, output)
        return load_saved(path, functools.partial(build, architecture_only=True, log=log), EDITS)
    elif path.is_dir() and (path / "config.json").is_file():
        _refuse_options(f"the Hugging Face folder {path}", None, (), output)
        from compress.loading.hf import own_seq_len

        length = own_seq_len(path) if seq_len is None else seq_len
        source = Source("hf", str(path.resolve()), input_shapes=input_shapes, seq_len=length, task=task, seed=seed)
    elif path.is_file():
        return _load_file(path, trust_pickle, input_shapes, length, task, output, seed)
    elif ":" in spec and not path.exists():
        source = Source("factory", spec, input_shapes=input_shapes, seq_len=length, task=task, seed=seed, output=output)
    else:
        raise UsageError(
            "model", spec,
            f"not found{did_you_mean(spec, BUNDLED)}; give a bundled name ({', '.join(BUNDLED)}), pkg.module:factory with --weights FILE, "
            "a Hugging Face model folder, or a folder saved by compress",
        )
    if weights is not None:
        source = dataclasses.replace(source, weights=str(Path(weights).resolve()))
        _check_weights_path(Path(weights))
    return build(source, trust_pickle=trust_pickle, log=log)


def _refuse_options(what: str, weights, input_shapes, output) -> None:
    """Options that would be silently ignored are refused: these models bring their own weights,
    example inputs and output."""
    if weights is not None:
        raise UsageError("--weights", weights, f"{what} has its own weights; --weights is for pkg.module:factory models")
    if input_shapes:
        raise UsageError("--input-shape", ",".join(map(str, input_shapes[0])), f"{what} has its own example inputs; --input-shape is for pkg.module:factory and pickled models")
    if output is not None:
        raise UsageError("--output", output, f"{what} has one output already; --output is for pkg.module:factory and pickled models")


def build(source: Source, *, trust_pickle: bool = False, architecture_only: bool = False, log: Callable[[str], None] = _quiet) -> Model:
    """Build the original architecture `source` describes, with its weights; `architecture_only`
    (a saved model, whose own weights replace them) needs neither the original weights file nor
    the Hugging Face folder's weights."""
    if source.kind == "bundled":
        module = importlib.import_module(f"compress.models.{source.ref}")
        model = module.load(source)
    elif source.kind == "hf":
        from compress.loading.hf import load_hf

        model = load_hf(source, with_weights=not architecture_only, log=log)
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
        raise UsageError("model factory", source.ref, f"cannot import it ({exc}); check the pkg.module:function spelling and that the package is installed or its folder is on PYTHONPATH (PYTHONPATH=. for a module file in the current folder)") from exc
    module, example_inputs = _call_factory(factory, source.ref)
    if source.input_shapes:
        example_inputs = random_inputs(source.input_shapes, source.seed)
    if example_inputs is None:
        raise UsageError("input shape", "none given", f"pass --input-shape 1,3,32,32 or make {source.ref} return (module, example_inputs)")
    names = ("input",) if len(example_inputs) == 1 else tuple(f"input_{i}" for i in range(len(example_inputs)))
    module = single_output(module, example_inputs, source.output, source.ref)
    return Model(module, example_inputs, names, source.task or "classification", source, name=attr)


def _call_factory(factory: Any, ref: str) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    """Call the user's factory with no arguments; whatever it raises or returns that is not a
    module (or (module, example_inputs)) is a UsageError naming the factory, never an internal error."""
    if not callable(factory):
        raise UsageError("model factory", ref, f"is a {type(factory).__name__}, not a function; name a function that returns an nn.Module")
    try:
        required = [p.name for p in inspect.signature(factory).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # builtins without a signature: just call them
        required = []
    if required:
        raise UsageError("model factory", ref, f"needs argument(s) {', '.join(required)}; compress calls it with none: name a function that builds the model without arguments")
    try:
        built = factory()
    except Exception as exc:  # the user's code: whatever it raises is theirs to fix, named as theirs
        cause = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UsageError("model factory", ref, f"raised {type(exc).__name__}: {cause}; fix the factory (--debug shows the traceback)") from exc
    fix = "it must return an nn.Module or (module, example_inputs)"
    if isinstance(built, tuple):
        if len(built) != 2:
            raise UsageError("model factory", ref, f"returned a tuple of {len(built)} item(s) {_types(built)}; {fix}")
        module, example_inputs = built
    else:
        module, example_inputs = built, None
    if not isinstance(module, nn.Module):
        raise UsageError("model factory", ref, f"returned {_types(built) if isinstance(built, tuple) else type(built).__name__}; {fix}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if example_inputs is not None:
        example_inputs = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else example_inputs
        if not isinstance(example_inputs, tuple) or not example_inputs or not all(isinstance(x, torch.Tensor) for x in example_inputs):
            raise UsageError("model factory", ref, f"returned example inputs of type {_types(example_inputs) if isinstance(example_inputs, tuple) else type(example_inputs).__name__}; give a tensor or a tuple of tensors")
    return module, example_inputs


def _types(items: tuple) -> str:
    return "(" + ", ".join(type(x).__name__ for x in items) + ")"


def _load_file(path: Path, trust_pickle: bool, input_shapes, seq_len, task, output, seed: int) -> Model:
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
    inputs = random_inputs(input_shapes, seed)
    names = ("input",) if len(inputs) == 1 else tuple(f"input_{i}" for i in range(len(inputs)))
    # A pickled module cannot be rebuilt from data; its source records the file for the report only.
    source = Source("factory", f"{PICKLE_PREFIX}{path.resolve()}", input_shapes=input_shapes, seq_len=seq_len, task=task, output=output)
    module = single_output(module, inputs, output, path.name)
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
