"""Teacher Intervention (Kim et al., EACL 2023, "Teacher Intervention: Improving Convergence of
Quantization Aware Training for Ultra-Low Precision Transformers"; code: MarsJacobs/ti-kd-qat,
transformer/modeling_quant.py; research/methods.md section 5).

For a first phase of QAT the float teacher's intact tensor replaces the quantized student's inside
every layer, on the same batch, so the sub-layers after it learn without the quantization error
of those before it:

- `o` (TI-O): the attention output projection's result (before dropout, residual and LayerNorm);
- `c` (TI-C): the context P.V, the input of that projection;
- `m` (TI-M): the attention probabilities P, multiplied by the student's own values V;
- `g` (TI-G): O for the first sixth of the phase, C for the next sixth, M for the rest (the
  paper's code; its C stage was inserted "for smoothing").

The residual stream and each layer's input stay the student's. The teacher's tensors are read
while `KDLoss` runs the teacher on the batch (no extra forward pass); the student's forward in
the same loss call gets them swapped in. Evaluation forwards (outside the loss) run unchanged.
Tensors are swapped one for one, so teacher and student need the same architecture.

CNNs (`block`), the issue's analogue: every student block's input is the float teacher's input to
that block on the same batch, i.e. the teacher's output of the block before it (or of the stem),
so no block sees the quantization error of those before it. A block is an element with layers of
its own of the outermost `nn.Sequential` chains (`cnn_blocks`): the residual blocks of the bundled
digits ResNet (`layer1.0` ... `layer3.2`) and of transformers' ResNet (`...stages.N.layers.M`),
a torchvision-style `layerN`, a user CNN written as Sequentials of conv blocks. As every block's
input is replaced, the output loss alone would train only the last block: the intervention
phase adds, per block, the MSE of the student's output to the teacher's, divided by the mean
square of the teacher's (a scale-free term, weight 1), as the paper's KD always has its layer-output
(hidden-state) term.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compress.data.specs import Dataset
from compress.distill.layers import transformer_layers
from compress.errors import UsageError

Mode = Literal["none", "o", "c", "m", "g", "block"]
TRANSFORMER_MODES = ("o", "c", "m", "g")
CNN_MODES = ("block",)


@dataclass(frozen=True)
class AttentionParts:
    """The modules of one BERT-family layer that intervention reads and replaces."""

    attention: nn.Module  # the self-attention: (hidden) -> (context [B, T, H*d], probabilities [B, H, T, T])
    value: nn.Module  # its value projection
    output: nn.Module  # the attention output projection (dense), reading the context


def attention_parts(module: nn.Module) -> list[AttentionParts]:
    """Per Transformer layer, its self-attention (a module with `query`, `key`, `value` children)
    and the output projection that reads its context (`attention.output.dense`): BERT, RoBERTa,
    MiniLM, ViT. Empty when the model has no such layers."""
    parts = []
    for layer in transformer_layers(module):
        named = dict(layer.named_modules())
        selves = [name for name, m in named.items() if all(hasattr(m, c) for c in ("query", "key", "value"))]
        if len(selves) != 1:
            return []
        parent = selves[0].rpartition(".")[0]
        dense = named.get(f"{parent}.output.dense" if parent else "output.dense")
        if dense is None:
            return []
        parts.append(AttentionParts(named[selves[0]], named[selves[0]].value, dense))
    return parts


def cnn_blocks(module: nn.Module) -> list[str]:
    """Names of the blocks `block` intervention feeds: the elements with parameters of the
    outermost `nn.Sequential` chains whose every element with parameters has layers of its own
    (a residual block, a conv-BN-ReLU group), in registration order. A Sequential of plain layers
    (a stem, a shortcut, a classifier head) is not a chain of blocks, and the search does not
    descend into a block. Empty for a model with none (a flat CNN, a Transformer's ModuleList)."""
    names: list[str] = []

    def composite(m: nn.Module) -> bool:
        return any(True for _ in m.children()) and any(True for _ in m.parameters())

    def visit(prefix: str, m: nn.Module) -> None:
        with_parameters = [(n, c) for n, c in m.named_children() if any(True for _ in c.parameters())]
        if isinstance(m, nn.Sequential) and with_parameters and all(composite(c) for _, c in with_parameters):
            names.extend(prefix + n for n, _ in with_parameters)
            return
        for n, child in m.named_children():
            visit(f"{prefix}{n}.", child)

    visit("", module)
    return names if len(names) >= 2 else []


def check_same_architecture(teacher: nn.Module, student: nn.Module, mode: Mode) -> None:
    """Exit 2 unless the float teacher and the (still float) student have the same layers and
    shapes, and the mode is one for this class of model (o/c/m/g: Transformer encoders; block: CNNs)."""
    fix = ("Teacher Intervention swaps the float teacher's tensors into the student layer by layer, so it needs the "
           "same architecture before QAT; run qat with --intervention none, or intervene before changing the model (e.g. pruning)")
    teacher_shapes = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    student_shapes = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    if teacher_shapes != student_shapes:
        differing = sorted(k for k in teacher_shapes.keys() | student_shapes.keys() if teacher_shapes.get(k) != student_shapes.get(k))
        raise UsageError("qat --intervention", mode, f"the teacher's structure differs from the student's ({len(differing)} tensors, e.g. "
                         f"{differing[0]}: {teacher_shapes.get(differing[0])} vs {student_shapes.get(differing[0])}). {fix}")
    name = type(student).__name__
    transformer = bool(attention_parts(teacher))
    if mode in TRANSFORMER_MODES and not transformer:
        other = "for a CNN use --intervention block, else none" if cnn_blocks(teacher) else "use --intervention none"
        raise UsageError("qat --intervention", mode, f"{name} has no BERT-family attention layers (query/key/value and "
                         f"attention.output.dense) to intervene in; o, c, m and g are for Transformer encoders: {other}")
    if mode in CNN_MODES and (transformer or not cnn_blocks(teacher)):
        raise UsageError("qat --intervention", mode, f"{name} is a Transformer encoder: use --intervention o, c, m or g" if transformer else
                         f"{name} has no blocks to feed the teacher's outputs into (two or more elements with layers of their own in an "
                         "nn.Sequential, such as a ResNet's residual blocks); use --intervention none")


def mode_at(mode: Mode, step: int, phase_steps: int) -> Mode:
    """The intervention of training step `step` (0-based) of a phase of `phase_steps`: TI-G's O -> C -> M."""
    if mode != "g":
        return mode
    if step < phase_steps / 6:
        return "o"
    return "c" if step < phase_steps / 3 else "m"


class Intervened(nn.Module):
    """A KD loss (`loss(student, batch)`) whose teacher tensors are swapped into the student during
    the call, by the mode of the current step. Its parameters are the KD loss's (fit trains them)."""

    def __init__(self, loss: nn.Module, teacher: nn.Module, mode: Mode, phase_steps: int) -> None:
        super().__init__()
        self.loss = loss
        self._teacher = (teacher,)  # not a submodule: frozen, never trained or saved
        self.mode, self.phase_steps = mode, phase_steps
        # Steps taken, a buffer so fit's checkpoint holds it: a resumed TI-G goes on in its stage.
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        mode = mode_at(self.mode, int(self.calls), self.phase_steps)
        self.calls += 1
        with intervening(self._teacher[0], student, mode) as blocks:
            loss = self.loss(student, batch)
        return loss + block_mse(blocks) if blocks.student else loss


@dataclass
class BlockOutputs:
    """Each block's output in one intervened loss call (`block` mode; empty otherwise)."""

    teacher: list[torch.Tensor | None]
    student: list[torch.Tensor | None]


def block_mse(blocks: BlockOutputs) -> torch.Tensor:
    """Mean over blocks of MSE(student, teacher) / mean(teacher^2): each block's own error on the
    teacher's input, on one scale for every block whatever its activations' size."""
    terms = [(s - t).pow(2).mean() / t.pow(2).mean().clamp(min=1e-12) for s, t in zip(blocks.student, blocks.teacher, strict=True)]
    return torch.stack(terms).mean()


@contextlib.contextmanager
def intervening(teacher: nn.Module, student: nn.Module, mode: Mode) -> Iterator[BlockOutputs]:
    """Hooks that record the teacher's tensors per layer and put them into the student's next
    forward; removed on exit, so the student carries no hook afterwards (export traces it clean).
    Yields the blocks' outputs of that forward (filled in `block` mode only)."""
    if mode == "none":
        yield BlockOutputs([], [])
        return
    if mode in CNN_MODES:
        with _feeding_blocks(teacher, student) as blocks:
            yield blocks
        return
    teacher_parts, student_parts = attention_parts(teacher), attention_parts(student)
    kept: list[torch.Tensor | None] = [None] * len(teacher_parts)
    values: list[torch.Tensor | None] = [None] * len(student_parts)
    handles = []
    for index, (t, s) in enumerate(zip(teacher_parts, student_parts, strict=True)):
        handles += _hooks(index, t, s, mode, kept, values)
    try:
        yield BlockOutputs([], [])
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _feeding_blocks(teacher: nn.Module, student: nn.Module) -> Iterator[BlockOutputs]:
    """`block` mode: the teacher's input to each block replaces the student's (the teacher's forward
    runs first, inside the KD loss); both blocks' outputs are kept for `block_mse`. Blocks are found
    on the float teacher and looked up by name in the student, whose folded and fake-quantized
    layers would change what the rule sees."""
    inner = student.module if isinstance(student, nn.parallel.DistributedDataParallel) else student
    names = cnn_blocks(teacher)
    inputs: list[torch.Tensor | None] = [None] * len(names)
    blocks = BlockOutputs([None] * len(names), [None] * len(names))
    handles = []
    for index, name in enumerate(names):
        t, s = teacher.get_submodule(name), inner.get_submodule(name)
        handles += [t.register_forward_pre_hook(lambda _m, args, i=index: inputs.__setitem__(i, args[0].detach())),
                    t.register_forward_hook(lambda _m, _a, out, i=index: blocks.teacher.__setitem__(i, _tensor(out).detach())),
                    s.register_forward_pre_hook(lambda _m, args, i=index: (inputs[i], *args[1:])),
                    s.register_forward_hook(lambda _m, _a, out, i=index: blocks.student.__setitem__(i, _tensor(out)))]
    try:
        yield blocks
    finally:
        for handle in handles:
            handle.remove()


def _tensor(output: object) -> torch.Tensor:
    # A block may return (hidden, extras...), as transformers' layers do; its first element flows on.
    return output[0] if isinstance(output, tuple) else output


def _hooks(index: int, t: AttentionParts, s: AttentionParts, mode: Mode, kept: list, values: list) -> list:
    def keep(tensor: torch.Tensor) -> None:
        kept[index] = tensor.detach()

    if mode == "o":  # the projection's result
        return [t.output.register_forward_hook(lambda _m, _a, out: keep(out)),
                s.output.register_forward_hook(lambda _m, _a, out: kept[index])]
    if mode == "c":  # the context, as the projection's input
        return [t.output.register_forward_pre_hook(lambda _m, args: keep(args[0])),
                s.output.register_forward_pre_hook(lambda _m, args: (kept[index], *args[1:]))]

    # "m": the teacher's probabilities times the student's own values.
    def student_attention(_m: nn.Module, _args: tuple, out: tuple) -> tuple:
        probabilities, value = kept[index], values[index]
        batch, tokens, width = value.shape
        heads = probabilities.shape[1]
        per_head = value.view(batch, tokens, heads, width // heads).transpose(1, 2)
        context = torch.matmul(probabilities, per_head).transpose(1, 2).reshape(batch, tokens, width)
        return (context, probabilities, *out[2:])

    def keep_probabilities(_m: nn.Module, _args: tuple, out: tuple) -> None:
        if out[1] is None:
            raise UsageError("qat --intervention", "m", "the teacher's attention does not return its probabilities; load the model with eager attention")
        keep(out[1])

    return [t.attention.register_forward_hook(keep_probabilities),
            s.value.register_forward_hook(lambda _m, _a, out: values.__setitem__(index, out)),
            s.attention.register_forward_hook(student_attention)]
