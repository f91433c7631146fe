"""compress: prune, distill, quantize and export models to verified ONNX; bench and gate them.

The Python API mirrors the CLI: `compress.load(...)` a model, `compress.run(model, recipe, out)`.
"""

__version__ = "0.1.0"

from compress.load import load  # noqa: E402  (the version above is read by report.py)
from compress.runner import run  # noqa: E402

__all__ = ["__version__", "load", "run"]
