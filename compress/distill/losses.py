"""The KD loss library: pure loss functions on tensors, and `KDLoss`, which combines them by weight
for one teacher/student pair and is what the `distill` pass hands to `fit`.

- `logit_kl`: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": T^2 * KL(teacher
  || student) on temperature-softened distributions; summed over classes, mean over the batch
  (mdistiller's `kl_div(...).sum(1).mean()`).
- `cross_entropy`: the hard-label term, where the data has labels.
- `embedding_distance`: for sentence encoders (unit-norm embeddings), 1 - cosine takes the place
  of the logit term (for unit vectors it is half the squared distance, so MSE ranks the same).
- `hidden_mse`: layer distillation (CoFi, Xia et al. 2022; TinyBERT's hidden loss): MSE between
  mapped Transformer layer outputs over real (unpadded) tokens, the student's projected by a
  learned linear map where its width differs from the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.distill.layers import captured_outputs, transformer_layers, uniform_layer_map
from compress.errors import UsageError


def logit_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes, mean over the
    batch. The T^2 keeps the gradient's size independent of T (Hinton et al. 2015, section 2)."""
    student_log_p = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean") * temperature**2


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student_logits, labels)


def embedding_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine similarity of matching rows: 0 when the embeddings point the same way."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def hidden_mse(
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    projections: Sequence[nn.Module],
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over mapped layer pairs of MSE(projection(h_student), h_teacher), each [batch, tokens,
    width]; with `token_mask` [batch, tokens] (1 = real token) padding positions count for nothing."""
    losses = []
    for student, teacher, project in zip(student_states, teacher_states, projections, strict=True):
        squared = (project(student) - teacher).pow(2).mean(dim=-1)
        if token_mask is None:
            losses.append(squared.mean())
        else:
            mask = token_mask.to(squared.dtype)
            losses.append((squared * mask).sum() / mask.sum().clamp(min=1))
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class KDWeights:
    kl: float = 1.0  # the output term: logit KL (classifiers) or 1 - cosine (encoders)
    ce: float = 0.0  # hard labels, where the batch has them (classifiers only)
    hidden: float = 0.0  # Transformer layer outputs (CoFi / TinyBERT layer distillation)


class KDLoss(nn.Module):
    """The weighted KD loss of `student` against a frozen `teacher` on one batch.

    Called as `loss(student, batch)` (the `fit` contract), so `fit` may hand over a wrapped
    student. Its only parameters are the learned width projections of `hidden_mse`, which `fit`
    trains with the student; they are dropped after training and never reach the exported model.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        task: Literal["classification", "embedding"],
        weights: KDWeights,
        temperature: float = 1.0,
        example_inputs: tuple[torch.Tensor, ...] = (),
    ) -> None:
        super().__init__()
        # Held in a tuple so the frozen teacher is neither a submodule (trained, saved, moved with
        # the loss) nor a parameter of the optimizer.
        self._teacher = (teacher,)
        self.task, self.weights, self.temperature = task, weights, temperature
        self.layer_pairs: tuple[tuple[int, int], ...] = ()
        self.projections = nn.ModuleList()
        if weights.hidden > 0:
            self._map_layers(teacher, student, example_inputs)

    def _map_layers(self, teacher: nn.Module, student: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> None:
        student_layers, teacher_layers = transformer_layers(student), transformer_layers(teacher)
        if not student_layers or not teacher_layers:
            name = type(student if not student_layers else teacher).__name__
            raise UsageError("hidden-state distillation", name, "needs a Transformer encoder (a list of layers); use --hidden 0 for this model")
        self.layer_pairs = uniform_layer_map(len(student_layers), len(teacher_layers))
        # One probe forward in eval mode reads the widths (and moves no BatchNorm statistics).
        student.eval()
        with torch.no_grad():
            student_states = _forward_states(student, self._student_layers(student), example_inputs)[1]
            teacher_states = _forward_states(teacher, self._teacher_layers(teacher), example_inputs)[1]
        for s_state, t_state in zip(student_states, teacher_states):
            if s_state.dim() != 3:
                raise UsageError("hidden-state distillation", f"layer output of shape {list(s_state.shape)}", "needs [batch, tokens, width] layer outputs; use --hidden 0 for this model")
            s_width, t_width = s_state.shape[-1], t_state.shape[-1]
            self.projections.append(nn.Identity() if s_width == t_width else nn.Linear(s_width, t_width))

    def _student_layers(self, student: nn.Module) -> list[nn.Module]:
        # Looked up on the module given at each call, which may wrap the student (DDP) or copy it.
        layers = transformer_layers(student) if self.layer_pairs else []
        return [layers[s] for s, _ in self.layer_pairs]

    def _teacher_layers(self, teacher: nn.Module) -> list[nn.Module]:
        layers = transformer_layers(teacher) if self.layer_pairs else []
        return [layers[t] for _, t in self.layer_pairs]

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        (teacher,) = self._teacher
        with torch.no_grad():
            teacher.eval()
            teacher_out, teacher_states = _forward_states(teacher, self._teacher_layers(teacher), batch.inputs)
        student_out, student_states = _forward_states(student, self._student_layers(student), batch.inputs)
        w = self.weights
        terms = []  # only the terms with a weight, so a zero weight skips work that may not apply
        if w.kl > 0:
            output_term = logit_kl(student_out, teacher_out, self.temperature) if self.task == "classification" else embedding_distance(student_out, teacher_out)
            terms.append(w.kl * output_term)
        if w.ce > 0 and self.task == "classification" and batch.labels is not None:
            terms.append(w.ce * cross_entropy(student_out, batch.labels))
        if w.hidden > 0:
            mask = None if batch.mask_input is None else batch.inputs[batch.mask_input]
            terms.append(w.hidden * hidden_mse(student_states, teacher_states, self.projections, mask))
        if not terms:
            raise UsageError("distill loss", "no term applies", "give --kl or --hidden a positive weight (--ce needs a classifier and labelled data)")
        return torch.stack(terms).sum()


def _forward_states(module: nn.Module, layers: Sequence[nn.Module], inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with captured_outputs(layers) as states:
        output = module(*inputs)
    return output, states
