"""What every pass may need (`Context`) and what every pass returns (`Result`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.data.specs import Dataset
from compress.model import Model


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Context:
    """Run folder, seed, the frozen teacher, the held-out data and the progress reporter.

    Nothing here is global: two runs in one process get two contexts. `artifacts` is the one
    mutable part: the pipeline adds each step's files to it, so a later step can find the ONNX an
    earlier step wrote. Other data sources (train, calibration, synthetic) and the device join here
    with the passes that use them.
    """

    run_dir: Path
    teacher: Model
    heldout: Dataset | None = None
    seed: int = 0
    log: Callable[[str], None] = _quiet
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """A pass's new model, its own figures (flat, JSON-able) and the files it wrote."""

    model: Model
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
