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
- `relation_kl` on `relation_logits`: MiniLM (Wang et al. 2020) attention-map KL (query-key) and
  value-relation KL (value-value) of mapped layers (the last by default); a student with fewer
  heads is compared per MiniLMv2 relation head (Wang et al. 2021) or on head-averaged maps.
- attention-output MSE: `hidden_mse` on the attention blocks' outputs (TernaryBERT / Teacher
  Intervention's "output" term).
- `rkd_distance`, `rkd_angle`: relational KD (Park et al. 2019) on the outputs (embeddings or
  logits): the batch's pairwise distances and triplet angles, any width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.distill.attention import LayerParts, RelationLayers, attention_layers, captured_parts, relation_layer_pairs
from compress.distill.layers import captured_outputs, transformer_layers, uniform_layer_map
from compress.errors import UsageError
from compress.pruning.heads import encoder_layers


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
    attention: float = 0.0  # MiniLM attention-map KL
    value_relation: float = 0.0  # MiniLM value-relation KL
    attention_output: float = 0.0  # MSE of the attention blocks' outputs
    rkd_distance: float = 0.0  # RKD distance term on the outputs
    rkd_angle: float = 0.0  # RKD angle term on the outputs

    @property
    def inside_attention(self) -> bool:
        return self.attention > 0 or self.value_relation > 0 or self.attention_output > 0


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
        relation_layers: RelationLayers = "last",
        relation_heads: int | None = None,
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
        self.relation_heads = relation_heads
        self.attention_pairs: tuple[tuple[int, int], ...] = ()
        if weights.inside_attention:
            self._map_attention(teacher, student, relation_layers)

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

    def _map_attention(self, teacher: nn.Module, student: nn.Module, which: RelationLayers) -> None:
        """Pair the layers the attention terms read, and check the relation heads divide every
        paired query width (MiniLMv2 re-splits the concatenated heads into that many)."""
        student_layers = attention_layers(student, "attention distillation")
        teacher_layers = attention_layers(teacher, "attention distillation")
        self.attention_pairs = relation_layer_pairs(len(student_layers), len(teacher_layers), which)
        if self.relation_heads is None:
            return
        for s, t in self.attention_pairs:
            for layer in (student_layers[s], teacher_layers[t]):
                width = layer.part(layer.layout.query).out_features
                if width % self.relation_heads:
                    raise UsageError("--relation-heads", self.relation_heads, f"must divide the query width {width} of {layer.name}; choose a divisor of it")

    def _attention_layers(self, module: nn.Module, side: int) -> list:
        layers = encoder_layers(module) if self.attention_pairs else []
        return [layers[pair[side]] for pair in self.attention_pairs]

    def _student_layers(self, student: nn.Module) -> list[nn.Module]:
        # Looked up on the module given at each call, which may wrap the student (DDP) or copy it.
        layers = transformer_layers(student) if self.layer_pairs else []
        return [layers[s] for s, _ in self.layer_pairs]

    def _teacher_layers(self, teacher: nn.Module) -> list[nn.Module]:
        layers = transformer_layers(teacher) if self.layer_pairs else []
        return [layers[t] for _, t in self.layer_pairs]

    def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
        (teacher,) = self._teacher
        with torch.no_grad(), captured_parts(self._attention_layers(teacher, 1)) as teacher_parts:
            teacher.eval()
            teacher_out, teacher_states = _forward_states(teacher, self._teacher_layers(teacher), batch.inputs)
        with captured_parts(self._attention_layers(student, 0)) as student_parts:
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
        if w.inside_attention:
            mask = None if batch.mask_input is None else batch.inputs[batch.mask_input]
            terms.extend(self._attention_terms(student_parts, teacher_parts, mask))
        if w.rkd_distance > 0:
            terms.append(w.rkd_distance * rkd_distance(student_out, teacher_out))
        if w.rkd_angle > 0:
            terms.append(w.rkd_angle * rkd_angle(student_out, teacher_out))
        if not terms:
            raise UsageError("distill loss", "no term applies", "give --kl, --hidden or another loss weight a positive value (--ce needs a classifier and labelled data)")
        return torch.stack(terms).sum()


    def _attention_terms(self, student_parts: list[LayerParts], teacher_parts: list[LayerParts], mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The weighted attention-map KL, value-relation KL and attention-output MSE, each averaged
        over the paired layers."""
        w, terms = self.weights, []
        for weight, left, right in ((w.attention, "query", "key"), (w.value_relation, "value", "value")):
            if weight > 0:
                per_layer = [self._relation(s, t, left, right, mask) for s, t in zip(student_parts, teacher_parts)]
                terms.append(weight * torch.stack(per_layer).mean())
        if w.attention_output > 0:
            for s, t in zip(student_parts, teacher_parts):
                if s.output.shape[-1] != t.output.shape[-1]:
                    raise UsageError("attention-output distillation", f"widths {s.output.shape[-1]} and {t.output.shape[-1]}", "needs the student's hidden width to equal the teacher's; use --hidden (it learns a projection) instead")
            identity = [nn.Identity()] * len(student_parts)
            terms.append(w.attention_output * hidden_mse([s.output for s in student_parts], [t.output for t in teacher_parts], identity, mask))
        return terms

    def _relation(self, student: LayerParts, teacher: LayerParts, left: str, right: str, mask: torch.Tensor | None) -> torch.Tensor:
        """KL between one layer pair's relation maps: per relation head when `relation_heads` is
        set (MiniLMv2), per head when the head counts agree (MiniLM), else of the head averages."""
        heads = self.relation_heads
        average = heads is None and student.heads != teacher.heads
        s_heads, t_heads = (heads, heads) if heads is not None else (student.heads, teacher.heads)
        s_log_p = relation_log_probs(relation_logits(getattr(student, left), getattr(student, right), s_heads), mask, average)
        t_log_p = relation_log_probs(relation_logits(getattr(teacher, left), getattr(teacher, right), t_heads), mask, average)
        return relation_kl(s_log_p, t_log_p.detach(), mask)


def _forward_states(module: nn.Module, layers: Sequence[nn.Module], inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with captured_outputs(layers) as states:
        output = module(*inputs)
    return output, states


# MiniLM relation losses (Wang et al. 2020, "MiniLM", eq. 4-7; MiniLMv2, Wang et al. 2021, section
# 3.1) and RKD (Park et al. 2019, "Relational Knowledge Distillation", eq. 3-7). Masked key
# positions get this finite logit rather than -inf, so the KL of a padded position is an exact 0
# and never 0 * inf.
MASKED_LOGIT = -1e4


def relation_logits(left: torch.Tensor, right: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, heads, tokens, tokens] scaled dot products of `left` and `right` ([batch, tokens,
    width]) split into `heads` heads of width / heads: left_h @ right_h^T / sqrt(width / heads).
    Query and key give the attention scores; value with itself, MiniLM's value relation. With
    `heads` other than the model's own, the concatenated heads are re-split into relation heads
    (MiniLMv2), so a student with fewer heads still gives as many maps as the teacher."""
    batch, tokens, width = left.shape
    size = width // heads
    split_left = left.view(batch, tokens, heads, size).transpose(1, 2)
    split_right = right.view(batch, tokens, heads, size).transpose(1, 2)
    return split_left @ split_right.transpose(-1, -2) / size**0.5


def relation_log_probs(logits: torch.Tensor, token_mask: torch.Tensor | None, average_heads: bool = False) -> torch.Tensor:
    """log softmax over the keys of [batch, heads, tokens, tokens] logits, padded keys masked out;
    with `average_heads`, the log of the head-averaged distribution ([batch, 1, tokens, tokens])."""
    if token_mask is not None:
        logits = logits.masked_fill(token_mask[:, None, None, :] == 0, MASKED_LOGIT)
    log_p = F.log_softmax(logits, dim=-1)
    if average_heads:
        log_p = torch.logsumexp(log_p, dim=1, keepdim=True) - math.log(log_p.shape[1])
    return log_p


def relation_kl(student_log_p: torch.Tensor, teacher_log_p: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """KL(teacher || student) of each query row's distribution over the keys, summed over keys and
    averaged over heads and real (unpadded) query positions: MiniLM's 1 / (A_h |x|) sum_a sum_t KL."""
    kl = F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="none").sum(-1)  # [batch, heads, tokens]
    if token_mask is None:
        return kl.mean()
    weights = token_mask.to(kl.dtype)[:, None, :].expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """[batch, batch] Euclidean distances of the rows of `x` ([batch, features]), 0 on the diagonal."""
    squared = x.pow(2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp(min=eps).sqrt()
    return distances * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-D: Huber loss between the students' and the teacher's pairwise distances, each divided
    by its mean over distinct pairs (so widths and scales may differ). mdistiller's RKD.py: smooth
    L1 with beta 1, mean over all [batch, batch] entries."""
    def normalised(x: torch.Tensor) -> torch.Tensor:
        d = pairwise_distances(x.flatten(1))
        return d / d[d > 0].mean()

    with torch.no_grad():
        target = normalised(teacher)
    return F.smooth_l1_loss(normalised(student), target)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD-A: Huber loss between the cosines of the angles each triple (i, j, k) makes at vertex i,
    cos(x_j - x_i, x_k - x_i), over all [batch, batch, batch] triples (mdistiller's RKD.py)."""
    def cosines(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        edges = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)  # [i, j] = unit(x_j - x_i)
        return edges @ edges.transpose(1, 2)

    with torch.no_grad():
        target = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), target)
