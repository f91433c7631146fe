"""The structural edits QAT records, and their replay when a saved model is loaded (compress.edits).

- "fold_bn": {"pairs": [[conv, bn], ...]}: each BatchNorm folded into its conv (Identity left).
- "fake_quant": {"bits", "layers", "shared", "signed", "activations", "outputs"}: Conv/Linear layers
  wrapped with LSQ quantizers; "activations" "dynamic" (text encoders) or "static" (absent in older
  saves); "outputs": the modules whose outputs are fake-quantized as the INT8 graph quantizes them
  (compress/quant/placement.py; absent in older saves); "tables": the nn.Embedding tables rounded to
  int8 per row (compress.quant.fake.TableQuant; absent in older saves, whose tables stay float).
- "smooth_input": {"alpha", "modules": [[name, channels], ...]}: SmoothQuant's 1/s on each named
  module's first input (compress/quant/smooth.py); the scales and the scaled weights are in the saved
  state.
The replay rebuilds the structure only; the saved weights and steps are loaded afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compress.model import Model

FOLD_BN, FAKE_QUANT, SMOOTH_INPUT = "fold_bn", "fake_quant", "smooth_input"


def fold_bn(model: Model, edit: dict[str, Any]) -> Model:
    from compress.quant.fold import fold

    fold(model.module, [tuple(pair) for pair in edit["pairs"]])
    return model


def fake_quant(model: Model, edit: dict[str, Any]) -> Model:
    from compress.quant.fake import wrap, wrap_outputs, wrap_tables

    wrap(model.module, edit["layers"], edit["bits"], edit["shared"], edit["signed"], edit.get("activations", "static"))
    wrap_tables(model.module, edit.get("tables") or [])
    wrap_outputs(model.module, edit.get("outputs") or {})
    return model


def smooth_input(model: Model, edit: dict[str, Any]) -> Model:
    from compress.quant.smooth import attach

    for name, channels in edit["modules"]:
        attach(model.module, name, channels)
    return model
