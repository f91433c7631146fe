"""The pruning edits: one function per kind, `fn(model, edit) -> Model`, used by the `prune` pass
to apply an edit and by `compress.edits.EDITS` to replay it on load, so the two cannot drift.

- `prune_channels`: `{"kind": "prune_channels", "kept": {root layer: [kept channel indices]}}`.
  The channel graph is traced again on the model's example inputs; each group (named by its root)
  keeps the listed channels, in order.
- `prune_heads`: `{"kind": "prune_heads", "layers": {encoder layer: {"heads": [...], "ffn": [...]}}}`:
  the kept attention heads and FFN neurons of each layer.
"""

from __future__ import annotations

from typing import Any

import torch

from compress.errors import RunFailed
from compress.model import Model

PRUNE_CHANNELS, PRUNE_HEADS = "prune_channels", "prune_heads"
# Relative gap allowed between the pruned model and the dense one with the removed channels
# zeroed: float32 rounding of the same sums taken in another order.
CHECK_TOLERANCE = 1e-4


def prune_channels(model: Model, edit: dict[str, Any], check: bool = False) -> Model:
    """Remove the channels `edit["kept"]` leaves out. With `check`, the result is first compared
    with the dense model whose removed channels are zeroed (they then carry nothing, so the
    outputs must agree); a group that breaks this is refused by name."""
    from compress.pruning.channels import ChannelGraph

    module = model.module
    kept = edit["kept"]
    graph = ChannelGraph(module, model.example_inputs)
    if check:
        dense = model.copy()
        checkable = [g.root for g in graph.groups if g.root in kept and not g.normalised]
        expected = _outputs_with(graph, kept, checkable, model)
        graph.prune(kept, checkable)
        _compare(model.replace(module=module), expected, model.example_inputs, lambda: _culprit(dense, edit, checkable))
        graph.prune(kept, [root for root in kept if root not in checkable])
    else:
        graph.prune(kept)
    return model.replace(module=module.eval(), edits=(*model.edits, edit))


def prune_heads(model: Model, edit: dict[str, Any]) -> Model:
    """Remove the attention heads and FFN neurons `edit["layers"]` leaves out."""
    from compress.pruning.heads import apply

    return model.replace(module=apply(model.module, edit["layers"]).eval(), edits=(*model.edits, edit))


def _outputs_with(graph, kept, roots, model: Model) -> torch.Tensor:
    hooks = graph.zero_hooks(kept, roots)
    try:
        return model(*model.example_inputs)
    finally:
        for hook in hooks:
            hook.remove()


def _compare(model: Model, expected: torch.Tensor, inputs, culprit) -> None:
    try:
        got = model(*inputs)
    except Exception:  # a wrongly pruned coupling fails here with a shape error; find the group
        raise culprit() from None
    if not _same(got, expected):
        raise culprit()


def _same(got: torch.Tensor, expected: torch.Tensor) -> bool:
    scale = max(1.0, float(expected.abs().max()))
    return got.shape == expected.shape and float((got - expected).abs().max()) <= CHECK_TOLERANCE * scale


def _culprit(dense: Model, edit: dict[str, Any], roots: list[str]):
    """Prune each group alone on a copy of the dense model to name the first one that changes
    the outputs."""
    from compress.pruning.channels import ChannelGraph

    for root in roots:
        trial = dense.copy()
        graph = ChannelGraph(trial.module, trial.example_inputs)
        expected = _outputs_with(graph, edit["kept"], [root], trial)
        graph.prune(edit["kept"], [root])
        try:
            same = _same(trial(*trial.example_inputs), expected)
        except Exception:  # the pruned model no longer runs: this group is the culprit
            same = False
        if not same:
            return graph.refusal(root, "removing its channels changes what the rest of the model computes")
    return RunFailed("prune: the pruned model differs from the dense model with the removed channels zeroed, and no single group explains it")
