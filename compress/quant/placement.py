"""Where onnxruntime will quantize a CNN's activations, found before QAT, so the torch model
fake-quantizes the same tensors and trains with them.

`export` hands the float graph to onnxruntime's static QDQ quantizer over the whole graph (research
/methods.md 6.5): besides the layers' inputs, it quantizes the residual Adds' inputs and outputs,
the pooling and the logits, and every reader of a tensor reads its one quantized copy (the residual
skip too). A torch model quantizing only the layers' inputs computed another function: on the
data-free digits student the INT8 graph's logits differed by up to 0.24 (cosine 0.997) and a
shorter-trained one disagreed on 6 of 360 test images (benchmarks/README.md, "Data-free
distillation on digits"). Here the float graph is quantized once on the calibration data, each
quantized tensor is matched to the torch module that produces it (by value, on one batch), and
that module's output gets a fake quantizer: the reading layer's own where a layer reads the tensor,
else a new one started from onnxruntime's calibrated range. `export` later gives onnxruntime the
learned steps of all of them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from torch import nn

from compress.data.specs import Dataset

if TYPE_CHECKING:
    from compress.model import Model
    from compress.quant.fake import QuantLayer


def plan_outputs(twin: Model, layers: dict[str, QuantLayer], shared: dict[str, str], calibration: list[Dataset]) -> tuple[dict[str, dict], list[str]]:
    """For the float `twin` of a fake-quantized model (its layers `layers`): {module name: {"owner":
    layer whose input quantizer it shares or None, "signed", "scale" (onnxruntime's, for a new
    quantizer), "tensors": ONNX value names}} and the quantized tensors no module produces (left
    as they are: the torch model cannot quantize them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from compress.onnx.export import export_onnx
    from compress.quant.calibration import DatasetReader
    from compress.quant.ort import quiet
    from compress.quant.qdq_export import layer_nodes

    with tempfile.TemporaryDirectory(prefix=".placement.") as scratch:
        source, target = Path(scratch) / "float.onnx", Path(scratch) / "qdq.onnx"
        # Traced on the calibration data's own shape: where onnxruntime quantizes does not depend on
        # it, and a model whose example inputs differ in size (a fully convolutional net calibrated
        # on larger images) still runs on that data.
        export_onnx(twin.replace(example_inputs=tuple(x[:1] for x in calibration[0].inputs)), source, 17)
        graph = onnx.load(str(source)).graph
        reader = DatasetReader(Dataset("calibration", tuple(torch.cat(parts) for parts in zip(*(b.inputs for b in calibration)))),
                               [i.name for i in graph.input], 32)
        with quiet():
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True})
        ranges = _activation_ranges(onnx.load(str(target)).graph, graph)
        values = _onnx_values(source, list(ranges), calibration[0])
    readers = {node.input[0]: shared.get(name, name) for name, (node, _, _) in layer_nodes(graph, layers).items()}
    producers = _module_outputs(twin.module, calibration[0].inputs)
    outputs: dict[str, dict] = {}
    unmatched = []
    for tensor, (scale, zero) in ranges.items():
        module = _producer(values[tensor], producers)
        if module is None:
            unmatched.append(tensor)
            continue
        entry = outputs.setdefault(module, {"owner": readers.get(tensor), "signed": zero > 0, "scale": scale, "tensors": []})
        entry["owner"] = entry["owner"] or readers.get(tensor)
        entry["tensors"].append(tensor)
    return outputs, unmatched


def _activation_ranges(quantized: onnx.GraphProto, source: onnx.GraphProto) -> dict[str, tuple[float, int]]:
    """{tensor: (scale, zero point)} of every QuantizeLinear of a computed tensor (not a weight, not
    a graph input) that also exists in the float graph."""
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in quantized.initializer}
    inputs = {i.name for i in source.input}
    known = {o for n in source.node for o in n.output}
    return {n.input[0]: (float(constants[n.input[1]]), int(constants[n.input[2]]))
            for n in quantized.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in constants and n.input[0] not in inputs and n.input[0] in known}


def _onnx_values(path: Path, names: list[str], batch: Dataset) -> dict[str, np.ndarray]:
    from compress.onnx.session import open_session

    proto = onnx.load(str(path))
    outputs = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in outputs)
    exposed = path.with_name("exposed.onnx")
    onnx.save(proto, str(exposed))
    session = open_session(exposed)
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), batch.inputs)}
    return dict(zip(names, session.run(names, feeds)))


def _module_outputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, list[torch.Tensor]]:
    """Each module's outputs on one forward (a module called twice has two: it cannot carry one quantizer for both)."""
    seen: dict[str, list[torch.Tensor]] = {}

    def record(name: str):
        def hook(_m: nn.Module, _args: tuple, out: object) -> None:
            if isinstance(out, torch.Tensor):
                seen.setdefault(name, []).append(out.detach().clone())
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in module.named_modules() if name]
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _producer(value: np.ndarray, producers: dict[str, list[torch.Tensor]]) -> str | None:
    """The innermost module called once whose output holds `value` (a residual block and its last
    ReLU give the same tensor: the ReLU is the one to wrap)."""
    found = None
    target = torch.from_numpy(value).flatten()
    for name, outs in producers.items():
        if len(outs) != 1 or outs[0].numel() != target.numel():
            continue
        if torch.allclose(outs[0].flatten(), target, rtol=1e-4, atol=1e-5 * max(1.0, float(target.abs().max()))):
            if found is None or name.count(".") > found.count(".") or name.startswith(found + "."):
                found = name
    return found
