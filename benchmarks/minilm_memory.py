"""Where a MiniLM run's memory goes, phase by phase (benchmarks/README.md, "Measurement"):

    .venv/bin/python benchmarks/minilm_memory.py

One process does what `compress run --model minilm export bench` does, in order, with the freed
heap handed back between phases as the pipeline does; after each phase it prints the resident
set and the peak since the previous line (VmHWM, reset through /proc/self/clear_refs, Linux only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


def mark(phase: str) -> None:
    status = Path("/proc/self/status").read_text()
    rss, peak = (int(status.split(f"{key}:")[1].split()[0]) // 1024 for key in ("VmRSS", "VmHWM"))
    print(f"| {phase} | {rss} | {peak} |", flush=True)
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    torch.set_num_threads(1)
    import onnx  # noqa: F401  (imported by every run; counted with the imports)
    import onnxruntime  # noqa: F401

    import compress
    from compress.data.specs import load_data
    from compress.heap import release_freed
    from compress.onnx.export import export_onnx
    from compress.onnx.outputs import onnx_outputs
    from compress.onnx.session import open_session
    from compress.predict import torch_outputs

    print("| phase | resident MB after | peak MB during |\n|---|---:|---:|")
    mark("imports (torch, onnx, onnxruntime)")
    model = compress.load("minilm")
    mark("MiniLM loaded (transformers and its BERT code imported, 90 MB of weights)")
    heldout = load_data(model.eval_data, model)
    release_freed()
    mark("text:heldout read")
    reference = torch_outputs(model, heldout)
    release_freed()
    mark("reference outputs (553 sentences, torch)")
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder) / "model.onnx").path
        mark("export (TorchScript exporter, then onnx.checker by path)")
        release_freed()
        session = open_session(path)
        torch_outputs(model, heldout.head(64))
        onnx_outputs(session, heldout.head(64))
        mark("parity session and both forwards on 64 sentences")
        del session
        release_freed()
        outputs = onnx_outputs(open_session(path), heldout)
        mark("quality of the ONNX on text:heldout")
    assert outputs.shape == reference.shape


if __name__ == "__main__":
    main()
