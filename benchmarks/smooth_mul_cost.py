"""What SmoothQuant's Muls cost at inference: two copies of a `qat` INT8 graph for a paired
`compress bench`, one with every smoothing Mul (the ones reading a `smooth_input` scale) bypassed,
one with those Muls kept but multiplying by the float after 1 (1 itself would let onnxruntime
remove them). Both compute the same values to float precision (wrong ones: the
weights still expect the scaled inputs, and the unscaled activations run into ranges that change
the float kernels' speed, so neither is timed against the real graph), so the difference between
the two is the Muls' cost alone.

Usage: .venv/bin/python benchmarks/smooth_mul_cost.py IN.onnx OUT_PREFIX
(writes OUT_PREFIX_no_mul.onnx and OUT_PREFIX_mul_by_one.onnx)
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main() -> None:
    source, prefix = sys.argv[1:3]
    model = onnx.load(source)
    for initializer in model.graph.initializer:
        if "smooth_input" in initializer.name:
            initializer.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(initializer), np.nextafter(np.float32(1), np.float32(2))), initializer.name))
    onnx.save(model, f"{prefix}_mul_by_one.onnx")
    graph = model.graph
    muls = [n for n in graph.node if n.op_type == "Mul" and any("smooth_input" in i for i in n.input)]
    for mul in muls:
        data = next(i for i in mul.input if "smooth_input" not in i)
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name == mul.output[0]:
                    node.input[index] = data
        graph.node.remove(mul)
    onnx.save(model, f"{prefix}_no_mul.onnx")
    print(f"{len(muls)} smoothing Muls: {prefix}_mul_by_one.onnx, {prefix}_no_mul.onnx")


if __name__ == "__main__":
    main()
