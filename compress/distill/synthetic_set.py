"""A synthetic set on disk: one safetensors file with the inputs (images, or token ids and their
attention mask), the sampled classes where there are any, and the
metadata that makes it reusable and checkable (the teacher's weight sha256, the seed, the settings,
the input shape and what its making measured).

A set is reused only for the teacher it was made from: `read_set` refuses a file whose teacher
hash differs (a set inverted from other weights matches other statistics). The cache keys a set by
the teacher hash, seed, input shape and settings, so the same request finds the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save

from compress.atomic import write_bytes
from compress.errors import UsageError

SET_FORMAT = "compress-synthetic-set"
SET_VERSION = 1
SET_FILE = "synthetic.safetensors"


@dataclass(frozen=True)
class SyntheticSet:
    inputs: tuple[torch.Tensor, ...]  # in the teacher's input order, named by `input_names`
    targets: torch.Tensor | None  # the sampled classes (BN inversion); None for token sequences
    teacher_sha256: str
    seed: int
    settings: dict[str, Any]
    input_shape: tuple[int, ...]
    # What making it measured (BN-statistics errors, class coverage, seconds): JSON-able.
    figures: dict[str, Any]
    input_names: tuple[str, ...] = ("images",)

    @property
    def key(self) -> str:
        return cache_key(self.teacher_sha256, self.seed, self.settings, self.input_shape)


def cache_key(teacher_sha256: str, seed: int, settings: dict[str, Any], input_shape: tuple[int, ...]) -> str:
    """The first 16 hex digits of the sha256 of everything that decides the images."""
    blob = json.dumps({"version": SET_VERSION, "teacher": teacher_sha256, "seed": seed,
                       "settings": settings, "input_shape": list(input_shape)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """`$COMPRESS_CACHE_DIR/synthetic`, else `$XDG_CACHE_HOME/compress/synthetic`, else
    `~/.cache/compress/synthetic`."""
    root = os.environ.get("COMPRESS_CACHE_DIR")
    if root:
        return Path(root) / "synthetic"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compress" / "synthetic"


def write_set(synthetic: SyntheticSet, path: str | os.PathLike) -> Path:
    metadata = {
        "format": SET_FORMAT,
        "inputs": json.dumps(list(synthetic.input_names)),
        "version": str(SET_VERSION),
        "teacher_sha256": synthetic.teacher_sha256,
        "seed": str(synthetic.seed),
        "settings": json.dumps(synthetic.settings, sort_keys=True),
        "input_shape": json.dumps(list(synthetic.input_shape)),
        "figures": json.dumps(synthetic.figures, sort_keys=True),
    }
    # Images are stored as float32, token ids and masks as they are (int64).
    tensors = {name: (x.detach().float() if x.is_floating_point() else x.detach()).contiguous()
               for name, x in zip(synthetic.input_names, synthetic.inputs, strict=True)}
    if synthetic.targets is not None:
        tensors["targets"] = synthetic.targets.long().contiguous()
    # Bytes through write_bytes: safetensors' own file writer leaves the file 0600.
    return write_bytes(path, save(tensors, metadata=metadata))


def read_set(path: str | os.PathLike, teacher_sha256: str | None = None) -> SyntheticSet:
    """Read a set; with `teacher_sha256`, refuse a set made from another teacher."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise UsageError("synthetic set", path, f"cannot be read ({exc}); synthesize it again") from exc
    # Sets written before text sets existed name no inputs: they hold images.
    names = tuple(json.loads(metadata.get("inputs", '["images"]')))
    if metadata.get("format") != SET_FORMAT or not all(name in tensors for name in names):
        raise UsageError("synthetic set", path, "is not a compress synthetic set (no format metadata); make one with `compress synthesize`")
    if metadata.get("version") != str(SET_VERSION):
        raise UsageError("synthetic set version", metadata.get("version"), f"this compress reads version {SET_VERSION}; synthesize it again")
    made_from = metadata.get("teacher_sha256", "")
    if teacher_sha256 is not None and made_from != teacher_sha256:
        raise UsageError("synthetic set", path, f"hash mismatch: made from teacher sha256 {made_from[:12]}, not this teacher's "
                         f"{teacher_sha256[:12]}; synthesize a set from this teacher")
    return SyntheticSet(
        inputs=tuple(tensors[name] for name in names),
        targets=tensors.get("targets"),
        teacher_sha256=made_from,
        seed=int(metadata["seed"]),
        settings=json.loads(metadata["settings"]),
        input_shape=tuple(json.loads(metadata["input_shape"])),
        figures=json.loads(metadata.get("figures", "{}")),
        input_names=names,
    )


def cached(key: str, teacher_sha256: str) -> SyntheticSet | None:
    """The cached set for `key`, or None; an unreadable cache entry counts as absent."""
    path = cache_dir() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        return read_set(path, teacher_sha256)
    except UsageError:
        return None


def store(synthetic: SyntheticSet) -> Path | None:
    """Keep a copy in the cache; a cache that cannot be written is skipped (it only saves time)."""
    try:
        return write_set(synthetic, cache_dir() / f"{synthetic.key}.safetensors")
    except (UsageError, OSError):
        return None
