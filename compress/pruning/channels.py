"""Channel groups of a CNN, found by Torch-Pruning's dependency graph (DepGraph, Fang et al.,
CVPR 2023), behind compress's own small API. No module outside `compress/pruning/` imports
`torch_pruning`.

A group is every tensor slice that must lose the same channels together: a conv's output
channels, its BatchNorm, the next conv's input channels, every member of a residual add, the
matching slice of a concat, both sides of a depthwise conv, the head's input features. A group is
named by its root, the first conv or linear layer whose output channels it holds.

Protected (never pruned): modules matched by an ignore glob, embeddings, and every group that
reaches the model's output (a classifier's logits, a backbone's pooled features), so the output
shape never changes.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from compress.errors import UsageError

# Module types DepGraph would treat as plain channel-wise ops although they mix channels in ways it
# cannot see (head splits, recurrent state): refused, never pruned silently wrong.
UNSUPPORTED = (nn.MultiheadAttention, nn.RNNBase, nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
# Normalisation over channels: pruning changes their statistics, so the zero-channel check below
# cannot hold exactly for groups that contain them.
CHANNEL_STATISTICS = (nn.LayerNorm, nn.GroupNorm)
# Channel-wise operations worth naming in a group (residual adds, gates, layout changes); other
# element-wise ops (activations, copies) are left out of the listing.
STRUCTURAL = ("add", "sub", "mul", "div", "permute", "transpose", "mean", "sum")
CHANNELWISE = ("relu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "elu", "softplus",
               "mish", "clone", "dropout", "pow", "sqrt", "neg", "exp", "log", "abs", "clamp", "maxpool", "avgpool",
               "adaptiveavgpool", "adaptivemaxpool", "upsample", "pad", "contiguous", "to_copy", "copy")


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable group: its root layer, channel count, what a removal touches and whether the
    group holds channel statistics (LayerNorm, GroupNorm)."""

    root: str
    width: int
    touches: tuple[str, ...]
    operations: tuple[str, ...]
    normalised: bool
    # Grouped convs (and GroupNorm) split the channels into this many equal slices that must stay
    # equal: a unit is then one offset, removed from every slice at once (Torch-Pruning's
    # channel groups).
    splits: int = 1


class ChannelGraph:
    """DepGraph over `module` traced on `inputs`; `groups` lists what may be pruned."""

    def __init__(self, module: nn.Module, inputs: Sequence[torch.Tensor], ignore: Iterable[str] = ()) -> None:
        self.module = module
        self.names = {m: name for name, m in module.named_modules()}
        ignore = tuple(ignore)
        _refuse_unsupported(module, ignore)
        protected = [m for name, m in module.named_modules() if isinstance(m, nn.Embedding) or any(fnmatch.fnmatch(name, g) for g in ignore)]
        self.graph = _trace(module, tuple(inputs))
        protected += _output_layers(self.graph)
        self._groups: dict[str, object] = {}
        self.groups: list[ChannelGroup] = []
        for group in self.graph.get_all_groups(ignored_layers=protected, root_module_types=(ops.TORCH_CONV, ops.TORCH_LINEAR)):
            if any(isinstance(dep.target.module, ops._OutputOp) for dep, _ in group):
                continue
            described = self._describe(group)
            self._groups[described.root] = group
            self.groups.append(described)

    def _describe(self, group) -> ChannelGroup:
        root = group[0].dep.target.module
        touches, operations, normalised, splits = [], [], False, 1
        for dep, _ in group:
            target = dep.target.module
            if isinstance(target, nn.modules.conv._ConvNd) and 1 < target.groups < target.out_channels:
                splits = max(splits, target.groups)
            elif isinstance(target, nn.GroupNorm):
                splits = max(splits, target.num_groups)
            if isinstance(target, nn.Parameter):
                touches.append(f"{dep.target.name} (parameter)")
            elif target in self.names:
                side = "out" if self.graph.is_out_channel_pruning_fn(dep.handler) else "in"
                touches.append(f"{self.names[target]} ({type(target).__name__}, {side})")
                normalised |= isinstance(target, CHANNEL_STATISTICS)
            elif _op_name(target):
                operations.append(_op_name(target))
        return ChannelGroup(self.names[root], self.graph.get_out_channels(root), tuple(dict.fromkeys(touches)),
                            tuple(dict.fromkeys(operations)), normalised, splits)

    def scores(self, importance: str) -> dict[str, torch.Tensor]:
        """Per group, one score per unit (a channel, or an offset of a split group: the mean over
        its slices), higher = keep, normalised by the group's mean so scores compare across
        groups (Torch-Pruning's `normalizer="mean"`). `taylor` reads the gradients already
        accumulated in `.grad` (see `compress.pruning.taylor`)."""
        scorer = {
            "l1": tp.importance.GroupMagnitudeImportance(p=1),
            "l2": tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": tp.importance.GroupTaylorImportance(),
            "bn_scale": tp.importance.BNScaleImportance(),
        }[importance]
        fallback = tp.importance.GroupMagnitudeImportance(p=2)
        splits = {g.root: g.splits for g in self.groups}
        result = {}
        for root, group in self._groups.items():
            score = scorer(group)
            # A group without BatchNorm has no BN scale to read: its weights' L2 norm stands in.
            if not isinstance(score, torch.Tensor) or score.numel() == 0:
                score = fallback(group)
            result[root] = score.detach().float().view(splits[root], -1).mean(0)
        return result

    def prune(self, kept: Mapping[str, Sequence[int]], roots: Iterable[str] | None = None) -> None:
        """Remove every channel of each group (by root) that is not in `kept[root]`."""
        for root in roots if roots is not None else kept:
            group = self._groups.get(root)
            if group is None:
                raise UsageError("pruned channel group", root, "is not a prunable group of this model; the model differs from the one it was pruned from")
            width = self.graph.get_out_channels(group[0].dep.target.module)
            keep = set(kept[root])
            removed = [i for i in range(width) if i not in keep]
            if not removed:
                continue
            try:
                self.graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, removed).prune()
            except Exception as exc:  # Torch-Pruning fails on couplings it maps wrong; name the group
                raise self.refusal(root, f"the channel graph cannot remove its channels ({str(exc).splitlines()[0][:120]})") from exc

    def refusal(self, root: str, why: str) -> UsageError:
        """Bad input naming the group's root and its structural operations, suggesting --ignore."""
        described = next((g for g in self.groups if g.root == root), None)
        ops_text = ", ".join(described.operations) if described and described.operations else "a coupled operation"
        return UsageError("prune", f"{root} ({ops_text})", f"{why}; protect it with --ignore '{root}'")

    def zero_hooks(self, kept: Mapping[str, Sequence[int]], roots: Iterable[str]) -> list:
        """Forward hooks that zero, in the dense model, the output channels pruning will remove:
        a removed channel that carries zero everywhere changes nothing, so the pruned model must
        give the same outputs as the dense one with these hooks (the check in `prune_channels`)."""
        hooks = []
        for root in roots:
            group = self._groups[root]
            width = self.graph.get_out_channels(group[0].dep.target.module)
            removed = [i for i in range(width) if i not in set(kept[root])]
            if not removed:
                continue
            for dep, idxs in self.graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, removed):
                target = dep.target.module
                if self.graph.is_out_channel_pruning_fn(dep.handler) and isinstance(target, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                    hooks.append(target.register_forward_hook(_zeroing(list(idxs), -1 if isinstance(target, nn.Linear) else 1)))
        return hooks


def _zeroing(channels: list[int], dim: int):
    def hook(_module, _inputs, output):
        output = output.clone()
        output.index_fill_(dim % output.dim(), torch.tensor(channels, dtype=torch.long), 0.0)
        return output

    return hook


def _trace(module: nn.Module, inputs: tuple[torch.Tensor, ...]):
    """Build the dependency graph; an operation DepGraph does not know is refused by name (it
    would otherwise be treated as channel-wise and could be pruned wrong)."""
    with warnings.catch_warnings(record=True) as caught, torch.enable_grad():
        warnings.simplefilter("always")
        try:
            graph = tp.DependencyGraph().build_dependency(module, example_inputs=inputs, forward_fn=lambda m, x: _first_tensor(m(*x)), verbose=True)
        except UsageError:
            raise
        except Exception as exc:  # tracing fails in model-specific ways; name the first line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError("prune", type(module).__name__, f"its graph cannot be traced ({first[:160]}); protect the failing part with --ignore GLOB") from exc
    unknown = [str(w.message) for w in caught if "Unknown operation" in str(w.message)]
    if unknown:
        raise UsageError("prune", unknown[0].split("operation ")[-1].split(" encountered")[0],
                         "is an operation the channel graph does not know; protect the module that runs it with --ignore GLOB")
    return graph


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    for value in (output.values() if isinstance(output, Mapping) else output):
        if isinstance(value, torch.Tensor):
            return value
    raise UsageError("prune", type(output).__name__, "the model returns no tensor to trace")


def _output_layers(graph) -> list[nn.Module]:
    """Layers whose output is the model's output (no consumer in the graph): their output
    channels are the model's output width."""
    return [m for m, node in graph.module2node.items() if isinstance(m, nn.Module) and not isinstance(m, ops._OutputOp) and not node.outputs]


def _refuse_unsupported(module: nn.Module, ignore: tuple[str, ...]) -> None:
    for name, m in module.named_modules():
        if isinstance(m, UNSUPPORTED) and not any(fnmatch.fnmatch(name, g) for g in ignore):
            raise UsageError("prune", f"{name} ({type(m).__name__})",
                             "channel pruning cannot follow this operation's head or state split; protect it with --ignore GLOB or prune another model")


def _op_name(op: object) -> str:
    names = {ops._ConcatOp: "concat", ops._SplitOp: "split", ops._ReshapeOp: "reshape", ops._SliceOp: "slice",
             ops._ExpandOp: "expand", ops._UnbindOp: "unbind"}
    for cls, name in names.items():
        if isinstance(op, cls):
            return name
    if isinstance(op, ops._ElementWiseOp):
        name = str(getattr(op, "_grad_fn", "")).lower()
        for suffix in ("backward0", "backward1", "backward"):
            name = name.replace(suffix, "")
        if any(kind in name for kind in STRUCTURAL):
            return next(kind for kind in STRUCTURAL if kind in name)
        # Activations, copies and a linear weight's transpose ("t") act on each channel alone;
        # anything else (a custom autograd function, an op Torch-Pruning does not know) is
        # named, since it may mix channels.
        return "" if name == "t" or any(benign in name for benign in CHANNELWISE) else name
    return type(op).__name__
