"""A pruned model saves as data (source + edits + safetensors) and reloads to identical outputs."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_families import HF_CASES

from compress.context import Context
from compress.loading.checkpoint import load
from compress.model import save
from compress.passes.prune import PruneConfig, prune


@settings(max_examples=6, deadline=None)
@given(ratio=st.floats(0.1, 0.9), importance=st.sampled_from(["l1", "l2", "bn_scale"]), round_to=st.sampled_from([1, 4]))
def test_pruned_digits_reload_to_identical_outputs(tmp_path_factory, ratio, importance, round_to):
    folder = tmp_path_factory.mktemp("saved")
    digits = load("digits")
    pruned = prune(digits, PruneConfig(ratio=ratio, importance=importance, round_to=round_to), Context(run_dir=folder, teacher=digits)).model
    save(pruned, folder / "model")
    again = load(str(folder / "model"))
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(again(x), pruned(x))
    assert again.edits == pruned.edits
    kept = json.loads((folder / "model" / "model.json").read_text())["edits"][0]["kept"]
    assert all(len(v) % round_to == 0 for v in kept.values())


def test_pruned_transformer_reloads_and_prunes_again(tmp_path):
    cls, config = HF_CASES["bert"]
    torch.manual_seed(0)
    cls(config).eval().save_pretrained(tmp_path / "bert")
    model = load(str(tmp_path / "bert"), seq_len=16)
    once = prune(model, PruneConfig(ratio=0.5, round_to=1), Context(run_dir=tmp_path, teacher=model)).model
    save(once, tmp_path / "once")
    again = load(str(tmp_path / "once"))
    ids = torch.randint(5, 100, (3, 16))
    assert torch.equal(again(ids, torch.ones_like(ids)), once(ids, torch.ones_like(ids)))
    # --model runs/x/model continues from it: a second prune adds a second edit.
    twice = prune(again, PruneConfig(ffn_ratio=0.5, head_ratio=0.0, round_to=1), Context(run_dir=tmp_path, teacher=again)).model
    save(twice, tmp_path / "twice")
    third = load(str(tmp_path / "twice"))
    assert len(third.edits) == 2 and torch.equal(third(ids, torch.ones_like(ids)), twice(ids, torch.ones_like(ids)))
