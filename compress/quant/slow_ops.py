"""Which operator types run slower in INT8 than in float, from onnxruntime's per-operator profile.

INT8 is not always faster: a small convolution, an Add that float fuses into the convolution
before it, or a MatMul too small to pay for quantizing its input can cost more as an integer
kernel than as the float kernel it replaced. Both graphs are profiled at batch 1 (after
onnxruntime's own fusions, `compress.measure.profile`), each kernel is charged to the float
operator type it implements, and the types whose integer kernels took at least as long as their
float kernels are the candidates to keep in float. A candidate is only a guess (float fusions hide
an Add inside its convolution): the ptq pass requantizes without them and keeps the result only
when the paired timing says the whole graph got faster.
"""

from __future__ import annotations

from dataclasses import dataclass

# onnxruntime's kernels, by the float operator type they implement. Integer kernels and the
# dynamic quantization of a MatMul's input (it exists only to feed that MatMul).
KERNEL_TYPE = {
    "QLinearConv": "Conv", "ConvInteger": "Conv", "FusedConv": "Conv", "NhwcFusedConv": "Conv",
    "QGemm": "Gemm", "FusedGemm": "Gemm",
    "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul", "DynamicQuantizeLinear": "MatMul", "FusedMatMul": "MatMul",
    "QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearAveragePool": "AveragePool", "QLinearConcat": "Concat", "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax", "QLinearReduceMean": "ReduceMean",
}  # fmt: skip


@dataclass(frozen=True)
class SlowType:
    op_type: str
    float_ms: float
    int8_ms: float

    def why(self) -> str:
        return f"{self.op_type}: {self.int8_ms:.3f} ms as INT8 vs {self.float_ms:.3f} ms as float per call"


def by_type(op_ms: dict[str, float]) -> dict[str, float]:
    """A profile's milliseconds per call summed by the float operator type each kernel implements."""
    totals: dict[str, float] = {}
    for kernel, ms in op_ms.items():
        kind = KERNEL_TYPE.get(kernel, kernel)
        totals[kind] = totals.get(kind, 0.0) + ms
    return totals


def slower_types(float_ms: dict[str, float], int8_ms: dict[str, float], quantized: set[str]) -> list[SlowType]:
    """The quantized operator types whose kernels took at least as long in the INT8 graph as in
    the float one (0 ms in float: fused away there), slowest difference first."""
    ours, theirs = by_type(int8_ms), by_type(float_ms)
    slow = [SlowType(kind, theirs.get(kind, 0.0), ours[kind]) for kind in sorted(quantized) if kind in ours and ours[kind] >= theirs.get(kind, 0.0)]
    return sorted(slow, key=lambda s: s.float_ms - s.int8_ms)
