"""Synthetic token sequences for a text encoder, which has no BatchNorm statistics to invert.

No reference method exists for statistics-matching inversion of text encoders (research/methods.md,
2.6), so three ways of drawing sequences are offered and measured (benchmarks/README.md,
"Data-free distillation on MiniLM"):

- `random`: every token drawn uniformly from the ordinary tokens of the vocabulary (the baseline;
  research/methods.md warns that random ids give unrealistic attention).
- `vocab-rank`: Zipf's law over the vocabulary's order. WordPiece and BPE vocabularies list their
  merged tokens roughly by corpus frequency ("the", "of", "and" come first in BERT's), so drawing
  rank r with probability ~ 1 / (r + 1)^s (s = 1: Zipf's law of word frequencies) gives text whose
  token frequencies look like language, from the tokenizer alone.
- `diverse`: `pool` vocab-rank candidates per kept sequence, the teacher embeds them all, and
  farthest-point selection keeps the set that covers the teacher's output space best (each next
  sequence is the one least similar to all kept so far): teacher-guided, forward passes only.

Ordinary tokens are those that are not special, not placeholders such as BERT's `[unused12]`, and
longer than one character once a subword mark (`##`, `Ġ`, `▁`) is stripped: WordPiece and BPE
vocabularies start with their character inventory, which is not in frequency order. Lengths are
uniform in [min_tokens, max_tokens] with the tokenizer's own special tokens around the body, then
padding to the model's sequence length (masked). A model without a tokenizer draws from the whole
embedding table, with no special tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from compress.atomic import write_text
from compress.data.specs import Dataset
from compress.distill.settings import TextSynthesisSettings
from compress.distill.synthetic_set import SET_FILE, SyntheticSet, cache_key, cached, read_set, store, write_set
from compress.errors import UsageError
from compress.model import Model
from compress.predict import torch_outputs
from compress.reporting.digest import state_sha256

TEXT_INPUTS = ("input_ids", "attention_mask")
SAMPLES_TXT = "synthetic_samples.txt"
SHOWN_SAMPLES = 32
DIVERSITY_ROWS = 1024
SUBWORD_MARKS = ("##", "Ġ", "▁")


def is_text_encoder(model: Model) -> bool:
    """A model that takes (input_ids, attention_mask): token sequences can feed it."""
    return tuple(model.input_names) == TEXT_INPUTS


def text_artifacts(run_dir: Path) -> dict[str, Path]:
    return {"synthetic": run_dir / SET_FILE, "synthetic_samples": run_dir / SAMPLES_TXT}


@dataclass(frozen=True)
class Vocabulary:
    """What sequences are made of: the ordinary token ids in vocabulary order, the special ids that
    wrap a sequence, and the padding id."""

    ordinary: torch.Tensor  # int64 ids, in vocabulary (rank) order
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad: int

    @classmethod
    def of(cls, model: Model) -> Vocabulary:
        tokenizer = model.tokenizer
        if tokenizer is None:
            return cls(torch.arange(_embedding_rows(model)), (), (), 0)
        specials = set(tokenizer.all_special_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        ordinary = [i for i, token in enumerate(tokens) if i not in specials and _ordinary(token)]
        if len(ordinary) < 2:
            raise UsageError("synthesize vocabulary", f"{len(ordinary)} ordinary tokens", "token sequences need a tokenizer with words in its vocabulary; distill from real text instead (distill --data text:FILE)")
        # The special tokens the tokenizer puts around any text: [CLS] ... [SEP] for BERT, <s> ... </s> for RoBERTa.
        wrapped = tokenizer("")["input_ids"]
        split = 1 if len(wrapped) >= 2 else 0
        return cls(torch.tensor(ordinary), tuple(wrapped[:split]), tuple(wrapped[split:]), int(tokenizer.pad_token_id or 0))


def _ordinary(token: str) -> bool:
    if token.startswith("[") and token.endswith("]") or token.startswith("<") and token.endswith(">"):
        return False  # placeholders: [unused12], <extra_id_3>
    for mark in SUBWORD_MARKS:
        token = token.removeprefix(mark)
    return len(token) > 1


def _embedding_rows(model: Model) -> int:
    from compress.pruning.heads import hf_model

    inner = hf_model(model.module)
    if inner is None:
        raise UsageError("synthesize", model.name, "token sequences need a Hugging Face text model (its embedding table); distill from real text instead")
    return inner.get_input_embeddings().num_embeddings


def draw_sequences(vocab: Vocabulary, count: int, settings: TextSynthesisSettings, seq_len: int,
                   generator: torch.Generator, frequencies: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [count, seq_len]: bodies of uniform length drawn from the
    ordinary tokens, `uniform`ly or by `zipf` rank, wrapped in the special tokens and padded."""
    wrap = len(vocab.prefix) + len(vocab.suffix)
    longest = min(settings.max_tokens, seq_len)
    shortest = min(settings.min_tokens, longest)
    if longest <= wrap:
        raise UsageError("synthesize max_tokens", longest, f"leaves no room inside the {wrap} special tokens; raise --max-tokens or --seq-len")
    lengths = torch.randint(max(shortest, wrap + 1), longest + 1, (count,), generator=generator)
    body = longest - wrap
    if frequencies == "zipf":
        ranks = torch.arange(1, len(vocab.ordinary) + 1, dtype=torch.float64)
        weights = ranks.pow(-settings.zipf_exponent)
        picks = torch.multinomial(weights, count * body, replacement=True, generator=generator).view(count, body)
    else:
        picks = torch.randint(0, len(vocab.ordinary), (count, body), generator=generator)
    ids = torch.full((count, seq_len), vocab.pad, dtype=torch.long)
    mask = torch.zeros((count, seq_len), dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        inner = length - wrap
        ids[row, :length] = torch.cat([torch.tensor(vocab.prefix, dtype=torch.long), vocab.ordinary[picks[row, :inner]],
                                       torch.tensor(vocab.suffix, dtype=torch.long)])
        mask[row, :length] = 1
    return ids, mask


def farthest_point_rows(embeddings: torch.Tensor, count: int) -> torch.Tensor:
    """`count` row indices chosen greedily so that each is the least cosine-similar to every row
    chosen before (k-center / farthest-point selection); the first is the row least similar to the
    mean."""
    unit = F.normalize(embeddings.double(), dim=1)
    first = int((unit @ F.normalize(unit.mean(0), dim=0)).argmin())
    chosen = [first]
    nearest = unit @ unit[first]  # each row's largest similarity to the chosen set
    for _ in range(count - 1):
        nearest[chosen[-1]] = float("inf")
        candidate = int(nearest.argmin())
        chosen.append(candidate)
        nearest = torch.maximum(nearest, unit @ unit[candidate])
    return torch.tensor(chosen)


def synthesize_text(teacher: Model, settings: TextSynthesisSettings, seed: int, log: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = Vocabulary.of(teacher)
    seq_len = teacher.example_inputs[0].shape[1]
    generator = torch.Generator().manual_seed(seed)
    if settings.text_method != "diverse":
        frequencies = "zipf" if settings.text_method == "vocab-rank" else "uniform"
        return draw_sequences(vocab, settings.sequences, settings, seq_len, generator, frequencies)
    pool = settings.sequences * settings.pool
    ids, mask = draw_sequences(vocab, pool, settings, seq_len, generator, "zipf")
    log(f"synthesize: the teacher embeds {pool} vocab-rank candidates to keep the {settings.sequences} most diverse")
    with torch.no_grad():
        embeddings = torch_outputs(teacher, Dataset("candidates", (ids, mask), mask_input=1))
    keep = farthest_point_rows(embeddings.flatten(1), settings.sequences)
    return ids[keep], mask[keep]


def make_text_set(
    teacher: Model,
    settings: TextSynthesisSettings,
    run_dir: Path,
    *,
    set_file: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> SyntheticSet:
    """The synthetic token sequences for `teacher` (from `set_file`, the cache, or drawn now),
    written into `run_dir` with a few of them decoded (`synthetic_samples.txt`)."""
    teacher_sha = state_sha256(teacher.module)
    if set_file is not None:
        made = read_set(set_file, teacher_sha)
        log(f"synthesize: using {len(made.inputs[0])} sequences from {set_file}")
        made = SyntheticSet(**{**made.__dict__, "figures": {**made.figures, "reused": True}})
    else:
        made = _cached_or_new(teacher, settings, teacher_sha, seed, log)
    write_set(made, run_dir / SET_FILE)
    write_text(run_dir / SAMPLES_TXT, _samples(teacher, made))
    return made


def _cached_or_new(teacher: Model, settings: TextSynthesisSettings, teacher_sha: str, seed: int, log: Callable[[str], None]) -> SyntheticSet:
    dumped = settings.model_dump()
    shape = tuple(teacher.example_inputs[0].shape[1:])
    hit = cached(cache_key(teacher_sha, seed, dumped, shape), teacher_sha)
    if hit is not None:
        log(f"synthesize: reusing cached set {hit.key} ({len(hit.inputs[0])} sequences)")
        return SyntheticSet(**{**hit.__dict__, "figures": {**hit.figures, "reused": True}})
    log(f"synthesize: drawing {settings.sequences} token sequences ({settings.text_method}) for {teacher.name}")
    started = time.perf_counter()
    ids, mask = synthesize_text(teacher, settings, seed, log)
    made = SyntheticSet((ids, mask), None, teacher_sha, seed, dumped, shape,
                        _figures(teacher, ids, mask, time.perf_counter() - started), input_names=TEXT_INPUTS)
    store(made)
    return made


@torch.no_grad()
def _figures(teacher: Model, ids: torch.Tensor, mask: torch.Tensor, seconds: float) -> dict[str, Any]:
    """Lengths, token variety, and how diverse the teacher finds the set: the mean cosine between
    the teacher's outputs of distinct sequences, over the first DIVERSITY_ROWS."""
    shown = slice(0, DIVERSITY_ROWS)  # the pairwise similarities of a large set would not fit in memory
    outputs = F.normalize(torch_outputs(teacher, Dataset("synthetic", (ids[shown], mask[shown]), mask_input=1)).flatten(1), dim=1)
    n = len(outputs)
    similarity = outputs @ outputs.T
    off_diagonal = (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
    real = ids[mask.bool()]
    return {
        "sequences": len(ids),
        "seconds_synthesis": round(seconds, 3),
        "reused": False,
        "tokens_mean": mask.sum(1).double().mean().item(),
        "distinct_tokens": int(real.unique().numel()),
        "teacher_output_cosine_mean": off_diagonal.item(),
    }


def _samples(teacher: Model, made: SyntheticSet) -> str:
    ids, mask = made.inputs
    rows = [ids[i][mask[i].bool()].tolist() for i in range(min(SHOWN_SAMPLES, len(ids)))]
    tokenizer = teacher.tokenizer
    lines = [tokenizer.decode(row) if tokenizer is not None else " ".join(map(str, row)) for row in rows]
    settings = ", ".join(f"{k}={v}" for k, v in made.settings.items())
    return f"# {len(ids)} synthetic sequences ({settings}); the first {len(lines)}:\n" + "\n".join(lines) + "\n"
