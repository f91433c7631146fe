"""What every pass may need (`Context`) and what every pass returns (`Result`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.data.specs import Dataset, Role
from compress.errors import UsageError
from compress.model import Model


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Context:
    """Run folder, the one seed, the device, the frozen teacher, data sources by role and the
    progress reporter.

    Nothing here is global: two runs in one process get two contexts. `artifacts` is the one
    mutable part: the pipeline adds each step's files to it, so a later step can find the ONNX an
    earlier step wrote. `data` maps a role (heldout, train, calibration, synthetic) to a source
    that gives batches (`Dataset.batches`); the held-out source measures quality and is never
    trained or calibrated on.
    """

    run_dir: Path
    teacher: Model
    data: Mapping[Role, Dataset] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    log: Callable[[str], None] = _quiet
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def heldout(self) -> Dataset | None:
        return self.data.get("heldout")

    def source(self, role: Role, needed_by: str) -> Dataset:
        """The data source for `role`; a UsageError names the pass that needs it when there is none."""
        if role not in self.data:
            raise UsageError(f"{needed_by} data", "none given", f"give {role} data, e.g. --data digits:train or --data text:train")
        return self.data[role]


@dataclass(frozen=True)
class Result:
    """A pass's new model, its own figures (flat, JSON-able) and the files it wrote."""

    model: Model
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
