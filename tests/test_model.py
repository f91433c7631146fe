from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from compress.errors import UsageError
from compress.loading.checkpoint import build, load
from compress.edits import EDITS
from compress.model import load_saved, save


def test_saved_model_rebuilds_to_identical_outputs(tmp_path):
    model = load("tiny_models:cnn")
    with torch.no_grad():
        model.module.head.bias.add_(1.0)  # weights that differ from what the factory builds
    save(model, tmp_path / "saved")
    again = load(str(tmp_path / "saved"))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(again(x), model(x))
    assert again.source == model.source
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["model.json", "model.safetensors"]


def test_unknown_edit_kind_is_refused(tmp_path):
    save(load("tiny_models:cnn"), tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "model.json").read_text())
    meta["edits"] = [{"kind": "teleport"}]
    (tmp_path / "saved" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="teleport"):
        load_saved(tmp_path / "saved", build, EDITS)


def test_copy_does_not_share_weights():
    model = load("tiny_models:cnn")
    clone = model.copy()
    with torch.no_grad():
        clone.module.head.weight.zero_()
    assert model.module.head.weight.abs().sum() > 0


def test_dynamic_axes_mark_batch_and_text_sequence():
    model = load("tiny_models:cnn")
    assert model.dynamic_axes == {"input": {0: "batch"}, "output": {0: "batch"}}
    text = model.replace(example_inputs=(torch.ones(1, 8, dtype=torch.long),), input_names=("input_ids",))
    assert text.dynamic_axes["input_ids"] == {0: "batch", 1: "sequence"}


def test_a_saved_pickled_module_says_it_cannot_be_rebuilt(tmp_path):
    from tiny_models import seeded_cnn

    torch.save(seeded_cnn(), tmp_path / "full.pt")
    save(load(str(tmp_path / "full.pt"), trust_pickle=True, input_shapes=((1, 1, 8, 8),)), tmp_path / "saved")
    with pytest.raises(UsageError, match="cannot be rebuilt from data"):
        load(str(tmp_path / "saved"))


def _keep_classes(model, edit):
    """An edit as the table holds them: gets the Model, records KEPT indices, returns a new Model.
    Replayed on load it only needs the shapes; the weights are loaded afterwards."""
    module = model.copy().module
    old = module.head
    module.head = nn.Linear(old.in_features, len(edit["kept"]))
    with torch.no_grad():
        module.head.weight.copy_(old.weight[edit["kept"]])
        module.head.bias.copy_(old.bias[edit["kept"]])
    return model.replace(module=module, edits=(*model.edits, edit))


def test_structural_edits_are_replayed_before_the_weights_load(tmp_path, monkeypatch):
    """The mechanism pruning uses: an edit recorded as data rebuilds the new architecture."""
    monkeypatch.setitem(EDITS, "keep_classes", _keep_classes)
    model = load("tiny_models:cnn")
    edited = _keep_classes(model, {"kind": "keep_classes", "kept": [0, 3, 7]})
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(edited(x), model(x)[:, [0, 3, 7]])
    save(edited, tmp_path / "saved")
    again = load(str(tmp_path / "saved"))
    assert again(x).shape == (2, 3) and torch.equal(again(x), edited(x))
    assert again.edits == edited.edits


def test_tied_and_sliced_weights_save_as_their_values(tmp_path):
    """Only a weight that shares storage (tied) or is a view is copied for safetensors; the rest
    are written from their own memory. Either way the file holds each tensor's values."""
    from safetensors.torch import load_file

    model = load("tiny_models:cnn")
    model.module.tied = nn.Linear(model.module.head.in_features, 10)
    model.module.tied.weight = model.module.head.weight  # tied, as HF ties input and output embeddings
    model.module.register_buffer("strided", torch.arange(12.0).reshape(3, 4).t())  # a view, not contiguous
    save(model, tmp_path / "saved")
    written = load_file(str(tmp_path / "saved" / "model.safetensors"))
    state = model.module.state_dict()
    assert written.keys() == state.keys() and all(torch.equal(written[k], state[k]) for k in state)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "saved" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
