"""Structured pruning: what can be removed from a model, how it is ranked, and the edits that
remove it (replayed on load through `compress.edits`).

- `channels`: CNN channel groups from Torch-Pruning's dependency graph (the only module that
  imports `torch_pruning`), their scores, removal, and the zeroed-channel check.
- `heads`: Transformer encoder surgery (attention heads, FFN neurons) and plain HF folders.
- `allocate`: how many units each group keeps (uniform / global, `round_to`) and which.
- `plan`: one interface over both kinds (`pruner_for`), used by the `prune` pass and `inspect --groups`.
- `edits`: the edit kinds `prune_channels` and `prune_heads` (kept indices).
- `taylor`: gradients for first-order Taylor importance; `search`: budgets by bisection;
  `latency`: the per-layer onnxruntime latency table.
"""
