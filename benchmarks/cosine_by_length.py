"""Mean cosine of an ONNX sentence encoder's embeddings to a reference model's, by sentence length
(real tokens, special tokens included): whether a shortfall on a corpus comes from its long
sentences or from its words.

Usage: .venv/bin/python benchmarks/cosine_by_length.py MODEL.onnx SPEC [SPEC ...] [--reference minilm]
  e.g. ... runs/p/int8/qat_int8.onnx text:heldout text:runs/p/int8/license.txt
"""

from __future__ import annotations

import argparse

import torch

from compress.data.specs import load_data
from compress.loading.checkpoint import load
from compress.onnx.outputs import onnx_outputs
from compress.onnx.session import open_session
from compress.predict import torch_outputs

BANDS = ((0, 16), (16, 32), (32, 64), (64, 10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--reference", default="minilm")
    args = parser.parse_args()
    reference = load(args.reference)
    session = open_session(args.model)
    for spec in args.specs:
        data = load_data(spec, reference)
        cosines = torch.nn.functional.cosine_similarity(torch_outputs(reference, data), onnx_outputs(session, data), dim=-1)
        lengths = data.inputs[data.mask_input if data.mask_input is not None else 1].sum(dim=1)
        print(f"{spec}: {len(cosines)} sentences, mean cosine {cosines.mean():.4f}")
        for low, high in BANDS:
            band = (lengths >= low) & (lengths < high)
            if band.any():
                print(f"  {low}-{high - 1} tokens: {int(band.sum())} sentences, mean cosine {cosines[band].mean():.4f}")


if __name__ == "__main__":
    main()
