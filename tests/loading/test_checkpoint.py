from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import UsageError
from compress.loading.checkpoint import load
from tiny_models import seeded_cnn


def test_factory_with_example_inputs():
    model = load("tiny_models:cnn")
    assert model.input_names == ("input",)
    assert model(*model.example_inputs).shape == (1, 10)


def test_factory_with_safetensors_weights_loads_them(tmp_path):
    other = seeded_cnn(seed=7)
    save_file(other.state_dict(), str(tmp_path / "w.safetensors"))
    model = load("tiny_models:cnn", weights=tmp_path / "w.safetensors")
    x = model.example_inputs[0]
    torch.testing.assert_close(model(x), other(x))


def test_pt_state_dict_is_read_weights_only(tmp_path):
    other = seeded_cnn(seed=3)
    torch.save(other.state_dict(), tmp_path / "w.pt")
    model = load("tiny_models:cnn", weights=tmp_path / "w.pt")
    torch.testing.assert_close(model.module.head.weight, other.head.weight)


def test_mismatched_state_dict_names_keys_and_shapes(tmp_path):
    save_file(seeded_cnn(width=8).state_dict(), str(tmp_path / "wide.safetensors"))
    with pytest.raises(UsageError, match=r"shape mismatch \[stem.0.weight file \[8, 1, 3, 3\] vs model \[4, 1, 3, 3\]"):
        load("tiny_models:cnn", weights=tmp_path / "wide.safetensors")
    state = seeded_cnn().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(UsageError, match=r"missing \[head.bias\]; unexpected \[extra.weight\]"):
        load("tiny_models:cnn", weights=tmp_path / "odd.safetensors")


def test_truncated_safetensors_is_usage_error(tmp_path):
    save_file(seeded_cnn().state_dict(), str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        load("tiny_models:cnn", weights=tmp_path / "w.safetensors")


def test_corrupt_pt_is_usage_error(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(UsageError, match="truncated or corrupt"):
        load("tiny_models:cnn", weights=tmp_path / "w.pt")


def test_pickled_module_refused_without_trust(tmp_path):
    torch.save(seeded_cnn(), tmp_path / "full.pt")
    with pytest.raises(UsageError, match="--trust-pickle"):
        load(str(tmp_path / "full.pt"))
    model = load(str(tmp_path / "full.pt"), trust_pickle=True, input_shapes=((2, 1, 8, 8),))
    assert model(*model.example_inputs).shape == (2, 10)


def test_pickled_module_as_weights_refused(tmp_path):
    torch.save(seeded_cnn(), tmp_path / "full.pt")
    with pytest.raises(UsageError, match="pickled objects"):
        load("tiny_models:cnn", weights=tmp_path / "full.pt")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_thing", "not found"),
        ("no_such_pkg.mod:fn", "cannot import"),
        ("tiny_models:not_a_module", "returned int"),
        ("tiny_models:cnn_without_inputs", "--input-shape"),
    ],
)
def test_bad_model_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        load(spec)


def test_wrong_file_types(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="ONNX file"):
        load(str(tmp_path / "m.onnx"))
    with pytest.raises(UsageError, match="weights only"):
        load(str(tmp_path / "w.safetensors"))
    with pytest.raises(UsageError, match="unknown file type .txt"):
        load(str(tmp_path / "notes.txt"))
    with pytest.raises(UsageError, match="file not found"):
        load("tiny_models:cnn", weights=tmp_path / "missing.safetensors")


def test_input_shape_overrides_factory_inputs():
    model = load("tiny_models:cnn_without_inputs", input_shapes=((3, 1, 8, 8),))
    assert model.example_inputs[0].shape == (3, 1, 8, 8)


def test_random_example_inputs_come_from_the_runs_seed_and_survive_a_rebuild(tmp_path):
    from compress.model import save

    shapes = ((2, 1, 8, 8),)
    one, again, other = (load("tiny_models:cnn_without_inputs", input_shapes=shapes, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(one.example_inputs, again.example_inputs))
    assert not torch.equal(one.example_inputs[0], other.example_inputs[0])
    save(one, tmp_path / "saved")
    rebuilt = load(str(tmp_path / "saved"))
    assert rebuilt.source.seed == 1 and all(torch.equal(a, b) for a, b in zip(rebuilt.example_inputs, one.example_inputs))
