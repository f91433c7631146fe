"""The choices a quantization pass offers, shared by its config and the mechanics (no heavy imports)."""

from __future__ import annotations

from typing import Literal

# static: calibrated QDQ; dynamic: activation ranges per call (MatMul); auto: static for float inputs, dynamic for text.
Mode = Literal["auto", "static", "dynamic"]
# uint8 activations with int8 weights (U8S8) take onnxruntime's fast x86 kernels; int8 (S8S8) is its default.
Activations = Literal["uint8", "int8"]
# Weight bits of QAT; 2 and ternary share the grid {-1, 0, 1} x step (ternary starts from TWN's step).
Bits = Literal["2", "3", "4", "8", "ternary"]
# How QAT's steps start: the largest magnitude, or the clipping with the least squared error.
Init = Literal["minmax", "mse"]
