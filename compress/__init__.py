"""compress: prune, distill, quantize and export models to verified ONNX; bench and gate them.

The Python API mirrors the CLI: `compress.load(...)` a model, `compress.run(model, recipe, out)`.
Both are imported on first use: they pull in torch, and light modules such as `compress.measure.bench`
(which measures a fresh process's memory) must not.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "run"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from compress.loading.checkpoint import load

        return load
    if name == "run":
        from compress.runner import run

        return run
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
