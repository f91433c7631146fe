"""The table of structural edits: how a saved model's architecture changes are replayed on load.

A pass that changes the architecture (pruning channels, heads, FFN neurons) records one edit per
change in `Model.edits`: a JSON-able dict with a `kind` key plus what the replay needs. Saving
writes the edits as data; loading builds the original from its `Source`, then calls
`EDITS[edit["kind"]](model, edit)` for each edit in order, then loads the weights strictly.

The contract for an entry `kind -> fn(model: Model, edit: dict) -> Model`:
- `model` is the freshly built model so far, example inputs included (a dependency graph such as
  Torch-Pruning's traces them to replay coupled removals); `fn` returns the edited `Model`.
- Indices in an edit are the KEPT indices (channels, heads, neurons), in their new order; the
  weights loaded afterwards fill the shapes the edit leaves.
- The same function applies the edit in the pass and replays it on load, so the two cannot drift.
- An edit of a kind missing here is refused on load (compress.model.load_saved).

It is a plain dict, handed to `load_saved` like `build`: no registration by import side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compress.model import Model
from compress.pruning.edits import PRUNE_CHANNELS, PRUNE_HEADS, prune_channels, prune_heads
from compress.quant import history
from compress.quant.edits import FAKE_QUANT, FOLD_BN, SMOOTH_INPUT, fake_quant, fold_bn, smooth_input

Edit = Callable[[Model, dict[str, Any]], Model]

EDITS: dict[str, Edit] = {
    PRUNE_CHANNELS: prune_channels,
    PRUNE_HEADS: prune_heads,
    history.KIND: history.replay_quantized,
    FOLD_BN: fold_bn,
    FAKE_QUANT: fake_quant,
    SMOOTH_INPUT: smooth_input,
}
