"""`compress run --resume`: a run killed (Ctrl-C, SIGTERM, SIGKILL, a failed step) continues from
its fit checkpoints and ends with the model the uninterrupted run gives.

Where: `.NAME.checkpoints/` beside the run folder (`compress.rundir.checkpoint_folder`), not in
it: the run writes into a staging folder that replaces the run folder only when the run completes,
and what a killed run staged is removed by the next one. The checkpoints are written and read only
by the holder of the run folder's lock, and removed when a run into that folder completes.

What: `step-N-PASS.pt` per training step (`compress.train`: weights, optimizer, schedule, RNG,
step, curve and best state; every `every` steps and at the fit's end), each recording what the
run was made from (the model and its weights' sha256, the recipe, the seed, the held-out data):
`--resume` refuses other settings, naming the keys that differ. Nothing is written before a fit
saves, so a run without training, or killed before its first checkpoint, leaves nothing to resume.

How: a resumed run does its steps again from the start. Every step is seeded, so the steps before
a fit give the same model again (the fit checks: its checkpoint records the sha256 of the weights
it started from); a fit with a checkpoint continues from it, and a fit that had finished hands
back its final state without training. Synthetic sets come back from their cache. Steps that time
the machine (bench, latency-driven pruning) measure again. Doing the cheap steps again is simpler
than storing each step's model, ONNX files and figures, and just as correct.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import UsageError

if TYPE_CHECKING:  # torch comes with it; `compress run --help` reads DEFAULT_EVERY and stays light
    from compress.train import Checkpointing

# Steps between checkpoints when `compress run` is not told (--checkpoint-every). Measured on a
# busy 2-core machine (load 9.5): digits' checkpoint (weights, two Adam moments, best state) is
# 4.5 MB and saves in 0.09 s; MiniLM's is 364 MB, 1.9-3.4 s, a few % of 100 of its KD steps.
DEFAULT_EVERY = 100


@dataclass(frozen=True)
class RunCheckpoints:
    """The checkpoint folder of one run: where each step's fit saves, how often, whether the fits
    continue from what is there, and what the run was made from (JSON-like)."""

    folder: Path
    every: int
    resume: bool
    made_from: Mapping[str, Any]

    def for_step(self, index: int, name: str) -> Checkpointing:
        from compress.train import Checkpointing

        return Checkpointing(self.folder / f"step-{index + 1}-{name}.pt", self.every, resume=self.resume,
                             identity={"step": f"{index + 1}.{name}", "run": self.made_from})

    def close_unfinished(self, log: Callable[[str], None]) -> None:
        """After a run that did not complete: say how to continue when a fit saved its state."""
        if _saved(self.folder):
            log(f"checkpoints kept in {self.folder}: the same command with --resume continues this run")


def open_checkpoints(folder: Path, made_from: Mapping[str, Any], *, every: int, resume: bool,
                     log: Callable[[str], None]) -> RunCheckpoints | None:
    """The run's checkpoints. Resuming: the folder must hold a fit's state from a run made from the
    same things (`made_from`), else a UsageError names the keys that differ. Starting afresh: what
    an earlier, unfinished run left is removed (None when `every` is 0: no checkpoints)."""
    from compress.train import changed_keys, checkpoint_identity

    made_from = json.loads(json.dumps(made_from, sort_keys=True, default=str))
    if resume:
        if every == 0:
            raise UsageError("--checkpoint-every", 0, "turns checkpoints off, and --resume continues from them; give a positive count")
        saved = _saved(folder)
        if not saved:
            raise UsageError("--resume", folder, "holds no checkpoint: no run into this --out was interrupted after a training step saved "
                             "its state (a run that completes removes its checkpoints); run without --resume")
        changed = sorted({key for path in saved for key in changed_keys(checkpoint_identity(path).get("run"), made_from)})
        if changed:
            raise UsageError("--resume", folder, f"holds an interrupted run made with other settings ({', '.join(changed)} differ); "
                             "restore them, or run without --resume to start again")
        log(f"resuming the interrupted run from {folder}")
        return RunCheckpoints(folder, every, True, made_from)
    if folder.exists():
        shutil.rmtree(folder)
        log(f"removed the checkpoints of an earlier unfinished run ({folder.name}); --resume would have continued it")
    return RunCheckpoints(folder, every, False, made_from) if every else None


def _saved(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*.pt"))
