"""The record a quantized model carries, so later passes can refuse to undo or repeat it.

Quantizing appends one entry of kind "quantized" to `Model.edits` (saved with the model, so a
model reloaded from a run folder still knows): `{"kind": "quantized", "pass": "ptq" | "qat",
"engine": ..., "bits": ...}`. `prune` and a second quantization read it through `quantization_of`
and refuse: pruning would change a float copy of the weights and silently drop the quantization.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compress.errors import UsageError

if TYPE_CHECKING:  # the PASSES table imports this module and stays free of torch
    from compress.model import Model

KIND = "quantized"


def quantization_of(model: Model) -> dict[str, Any] | None:
    """The last quantization recorded in `model`'s history, or None."""
    return next((edit for edit in reversed(model.edits) if edit.get("kind") == KIND), None)


def mark_quantized(model: Model, **details: Any) -> Model:
    return model.replace(edits=(*model.edits, {"kind": KIND, **details}))


def refuse_if_quantized(model: Model, step: str, fix: str) -> None:
    """A UsageError naming the earlier quantization when `model` was already quantized."""
    done = quantization_of(model)
    if done is not None:
        how = ", ".join(f"{k} {v}" for k, v in done.items() if k != "kind")
        raise UsageError(f"{step} step", f"the model is already quantized ({how})", fix)


def replay_quantized(model: Model, edit: dict[str, Any]) -> Model:
    """Loading a saved model: the marker changes no architecture (the saved weights are the float
    ones the quantized ONNX was made from); it is kept so the history survives the reload."""
    return model
