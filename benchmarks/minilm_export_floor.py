"""The peak memory of torch.onnx exporting all-MiniLM-L6-v2 with no compress code around it: the floor
under `compress run --model minilm export bench`'s peak RSS (benchmarks/README.md, "Measurement").

    .venv/bin/python benchmarks/minilm_export_floor.py torchscript   # the exporter compress uses for MiniLM
    .venv/bin/python benchmarks/minilm_export_floor.py dynamo        # its fallback (MiniLM's graph fails the checker)

Each prints the process's peak RSS after loading and after exporting (one process per exporter, so
one peak does not hide the other). The ONNX file goes to a temporary folder and is deleted.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import transformers

from compress.models.minilm import model_dir


class LastHidden(torch.nn.Module):
    """Positional inputs for the exporter; the encoder's last hidden state out."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(exporter: str) -> None:
    torch.set_num_threads(1)
    encoder = transformers.AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager").eval()
    print(f"{exporter}: MiniLM loaded, peak RSS {peak_mb():.0f} MB")
    ids = torch.ones(2, 128, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    with tempfile.TemporaryDirectory() as folder, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(encoder), (ids, torch.ones_like(ids)), str(Path(folder) / "minilm.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17 if exporter == "torchscript" else 18,
                          dynamo=exporter == "dynamo")
    print(f"{exporter}: exported, peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("torchscript", "dynamo"):
        sys.exit("usage: minilm_export_floor.py torchscript|dynamo")
    main(sys.argv[1])
