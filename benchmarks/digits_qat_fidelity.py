"""The data-free digits chain's INT8 export against its fake-quant torch model: one process runs
prune --ratio 0.5, BN inversion (128 images x 100 steps), data-free KD (400 steps, batch 64) and
qat --bits 8 (20 steps on the synthetic set), exports the INT8 graph as `export` does, and compares
it with the torch model on the real test (360) and train (1,437) splits: inputs whose top-1
differs and the torch model's top-two logit gap on them, the largest |logit difference|, the
smallest cosine, batch-1 latency against the float graph (best of 5 x 200 calls, one thread), and
for every tensor the torch model fake-quantizes between the layers, the share of its uint8 codes
that differ from onnxruntime's (graph optimisations off: the reference QDQ semantics).

    .venv/bin/python benchmarks/digits_qat_fidelity.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from compress.context import Context
from compress.data.specs import Dataset, load_data
from compress.distill.settings import InversionSettings
from compress.distill.synthetic import invert
from compress.loading.checkpoint import load
from compress.onnx.export import export_onnx
from compress.passes.distill import DistillConfig, distill
from compress.passes.prune import PruneConfig, prune
from compress.passes.qat import QatConfig, qat
from compress.predict import torch_outputs
from compress.quant import qdq_export


def main() -> None:
    torch.set_num_threads(1)
    model = load("digits")
    teacher = model.copy()
    teacher.module.requires_grad_(False)
    splits = {"test": load_data("digits:test", model), "train": load_data("digits:train", model)}
    work = Path(tempfile.mkdtemp())
    ctx = Context(run_dir=work, teacher=teacher, data={"heldout": splits["test"]}, heldout_spec="digits:test")
    student = prune(model, PruneConfig(ratio=0.5), ctx).model
    images = invert(teacher.module, (1, 32, 32), InversionSettings(images=128, steps=100), seed=0).images
    ctx.data["synthetic"] = synthetic = Dataset("synthetic", (images,))
    student = distill(student, DistillConfig(data="synthetic", steps=400, batch_size=64, eval_every=0), ctx).model
    quantized = qat(student, QatConfig(bits="8", steps=20), ctx).model
    print(f"load average {os.getloadavg()[0]:.1f}")
    reference = {name: torch_outputs(quantized, data) for name, data in splits.items()}
    twin, _ = qdq_export.float_twin(quantized)
    float_path = export_onnx(twin, work / "float.onnx", 17).path
    print(f"float graph: batch-1 {_latency_ms(float_path, splits['test']):.3f} ms")
    int8 = qdq_export.export_quantized(quantized, work / "int8.onnx", 17, synthetic.head(256)).path
    _compare("INT8", int8, splits, reference)
    _codes(int8, quantized, splits["test"])


def _session(path: Path, optimise: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latency_ms(path: Path, data: Dataset) -> float:
    session, x = _session(path), {"input": data.inputs[0][:1].numpy()}
    for _ in range(50):
        session.run(None, x)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(200):
            session.run(None, x)
        best = min(best, (time.perf_counter() - started) / 200 * 1e3)
    return best


def _compare(name: str, path: Path, splits: dict[str, Dataset], reference: dict[str, torch.Tensor]) -> None:
    session = _session(path)
    print(f"{name}: batch-1 {_latency_ms(path, splits['test']):.3f} ms")
    for split, data in splits.items():
        got = torch.from_numpy(session.run(None, {"input": data.inputs[0].numpy()})[0])
        expected = reference[split]
        flipped = got.argmax(1) != expected.argmax(1)
        top2 = expected[flipped].topk(2, dim=1).values
        cos = torch.nn.functional.cosine_similarity(got.double(), expected.double(), dim=1)
        print(f"  {split}: {int(flipped.sum())}/{len(data)} top-1 differ (torch top-two gaps {[round(float(g), 4) for g in top2[:, 0] - top2[:, 1]]}), "
              f"max |logit diff| {float((got - expected).abs().max()):.4f}, min cosine {float(cos.min()):.5f}, "
              f"ONNX accuracy {float((got.argmax(1) == data.labels).double().mean()):.4f}")


def _codes(path: Path, quantized, data: Dataset) -> None:
    from compress.quant.edits import FAKE_QUANT
    from compress.quant.fake import output_quantizer

    outputs = next(e["outputs"] for e in quantized.edits if e.get("kind") == FAKE_QUANT)
    proto = onnx.load(str(path))
    quantize_output = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    wanted = [(name, quantize_output[t]) for name, entry in outputs.items() for t in entry["tensors"][:1] if t in quantize_output]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(q, onnx.TensorProto.UINT8, None) for _, q in wanted)
    debug = path.with_name("debug.onnx")
    onnx.save(proto, str(debug))
    got = dict(zip([q for _, q in wanted], _session(debug, optimise=False).run([q for _, q in wanted], {"input": data.inputs[0].numpy()})))
    seen = {}
    hooks = [quantized.module.get_submodule(name).register_forward_hook(lambda _m, _a, out, name=name: seen.__setitem__(name, out.detach()))
             for name, _ in wanted]
    with torch.no_grad():
        quantized.module.eval()(data.inputs[0])
    for hook in hooks:
        hook.remove()
    print("uint8 codes that differ between torch and onnxruntime (reference QDQ semantics), per tensor quantized between the layers:")
    for name, q in wanted:
        quant = output_quantizer(quantized.module, name)
        ours = (torch.round(seen[name] / quant.step.detach()) + (128 if quant.q_n else 0)).numpy().reshape(got[q].shape)
        print(f"  {name:20s} {float((ours != got[q]).mean()):.4f}")


if __name__ == "__main__":
    main()
