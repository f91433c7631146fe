"""What every pass may need (`Context`) and what every pass returns (`Result`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from compress.errors import UsageError

if TYPE_CHECKING:  # torch comes with these; the PASSES table imports this module and must stay light
    from compress.data.specs import Dataset, Role
    from compress.model import Model
    from compress.train import Checkpointing


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Context:
    """Run folder, the one seed, the device, the frozen teacher, data sources by role and the
    progress reporter.

    Nothing here is global: two runs in one process get two contexts. `artifacts` and `configs`
    are the mutable parts: the pipeline adds each step's files and config to them, so a later step
    can find the ONNX an earlier step wrote and how it was made; likewise it adds the data sources
    a step made (synthesize's set) to `data`. `data` maps a role (heldout, train, calibration,
    synthetic) to a source that gives batches (`Dataset.batches`); the held-out source measures
    quality and is never trained or calibrated on.
    """

    run_dir: Path
    teacher: Model
    data: dict[Role, Dataset] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    log: Callable[[str], None] = _quiet
    artifacts: dict[str, Path] = field(default_factory=dict)
    # The config each pass last ran with, by pass name, filled in by the pipeline like
    # `artifacts`: the bench pass exports the original with the export step's config.
    configs: dict[str, Any] = field(default_factory=dict)
    # The spec the held-out source was read from; no other role may read it.
    heldout_spec: str | None = None
    # Where the current step's fit saves its state and resumes from (`fit(checkpointing=...)`);
    # set per step by the pipeline when the run keeps checkpoints (compress.resume), else None.
    checkpointing: Checkpointing | None = None

    @property
    def heldout(self) -> Dataset | None:
        return self.data.get("heldout")

    def source(self, role: Role, needed_by: str) -> Dataset:
        """The data source for `role`; a UsageError names the pass that needs it when there is none."""
        if role not in self.data:
            raise UsageError(f"{needed_by} data", "none given", f"give {role} data, e.g. --data digits:train or --data text:train")
        return self.data[role]

    def dataset(self, spec: str, role: Role) -> Dataset:
        """Read the data `spec` for `role` (a pass's own `--data`), tokenized for the teacher;
        the held-out spec is refused, so no figure is measured on data the model was fit to."""
        refuse_heldout(spec, role, self.heldout_spec)
        from compress.data.specs import load_data

        return load_data(spec, self.teacher)


DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """`device` if this torch can run there: cpu always, cuda only with a CUDA device."""
    if device not in DEVICES:
        raise UsageError("device", device, f"use one of {', '.join(DEVICES)}")
    if device == "cuda":
        import torch  # only here: the PASSES table imports this module and must stay light

        if not torch.cuda.is_available():
            raise UsageError("device", device, f"this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    return device


def refuse_heldout(spec: str, role: str, heldout_spec: str | None) -> None:
    """A UsageError when a pass's own data (`role` other than heldout) is the held-out spec."""
    if role != "heldout" and heldout_spec is not None and spec == heldout_spec:
        raise UsageError(f"{role} data", spec, f"is the held-out data quality is measured on; use another split, e.g. {_other_split(spec)}")


def _other_split(spec: str) -> str:
    kind, _, part = spec.partition(":")
    return {"digits": "digits:train", "text": "text:train"}.get(kind, "a different file") if part in ("test", "heldout") else "a different file"


# What a step can produce, by kind. The report's summary takes each kind from the last step that
# produced it, whatever the pass is called; each kind's figures are flat and JSON-able:
#   "onnx":    the current model as an ONNX file: path, bytes (and whatever else the pass adds)
#   "parity":  onnxruntime vs torch on that file: passed, max_abs_diff, tolerance, cosine_min
#   "latency": onnxruntime timings, named by the pass that measured them (p50_ms, p90_ms, ...)
Produced = Literal["onnx", "parity", "latency"]


@dataclass(frozen=True)
class Result:
    """A pass's new model, its own figures (flat, JSON-able), the files it wrote, what it
    produced by kind (see `Produced`), and the data sources it made for later steps, by role
    (synthesize's `synthetic` set)."""

    model: Model
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    produced: dict[Produced, dict[str, Any]] = field(default_factory=dict)
    data: dict[Role, Dataset] = field(default_factory=dict)
