"""Charging onnxruntime kernels to the float operator types they implement, and picking the
types whose INT8 kernels lost."""

from __future__ import annotations

from compress.quant.slow_ops import by_type, slower_types


def test_kernels_are_charged_to_the_float_type_they_implement():
    assert by_type({"QLinearConv": 0.3, "FusedConv": 0.1, "DynamicQuantizeLinear": 0.2, "MatMulIntegerToFloat": 0.5, "Softmax": 0.4}) == {
        "Conv": 0.4, "MatMul": 0.7, "Softmax": 0.4}


def test_only_quantized_types_that_lost_are_candidates_with_the_figures():
    float_ms = {"Conv": 0.54, "Gemm": 0.005, "GlobalAveragePool": 0.003}  # float fused each Add into its Conv
    int8_ms = {"QLinearConv": 0.29, "QLinearAdd": 0.04, "QGemm": 0.007, "QLinearGlobalAveragePool": 0.003, "QuantizeLinear": 0.004}
    slow = slower_types(float_ms, int8_ms, {"Conv", "Add", "Gemm", "GlobalAveragePool"})
    assert [s.op_type for s in slow] == ["Add", "Gemm", "GlobalAveragePool"]  # largest loss first; Conv won
    assert slow[0].why() == "Add: 0.040 ms as INT8 vs 0.000 ms as float per call"
    assert slower_types(float_ms, int8_ms, {"Conv"}) == []
