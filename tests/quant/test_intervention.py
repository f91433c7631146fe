"""Teacher Intervention: each mode swaps the teacher's tensor in at its place, so what lies
before that place in the student cannot change the output; TI-G's schedule; refusals."""

from __future__ import annotations

import pytest
import torch

from compress.errors import UsageError
from compress.quant.intervention import attention_parts, check_same_architecture, intervening, mode_at
from tiny_families import saved_family


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return saved_family("bert", tmp_path_factory.mktemp("ti"))


def _perturbed(teacher, names):
    """A copy of the teacher with noise on the weights whose names end with one of `names`."""
    student = teacher.copy().module
    with torch.no_grad():
        for name, param in student.named_parameters():
            if any(name.endswith(f"{n}.weight") for n in names):
                param.add_(torch.randn_like(param))
    return student


@pytest.mark.parametrize("mode, upstream", [
    ("o", ["query", "key", "value", "attention.output.dense"]),  # everything up to the projection's result
    ("c", ["query", "key", "value"]),  # everything up to the context
    ("m", ["query", "key"]),  # everything up to the probabilities
])
def test_the_teachers_tensor_hides_the_students_upstream_error(bert, mode, upstream):
    model, data = bert
    teacher = model.module.eval()
    student = _perturbed(model, upstream).eval()
    inputs = data.inputs
    with torch.no_grad():
        expected = teacher(*inputs)
        assert not torch.allclose(student(*inputs), expected, atol=1e-3)
        with intervening(teacher, student, mode):
            teacher(*inputs)  # the KD loss runs the teacher first; the student's forward follows
            got = student(*inputs)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        # The hooks are gone afterwards.
        assert not torch.allclose(student(*inputs), expected, atol=1e-3)


def test_value_error_still_reaches_the_output_under_tim(bert):
    model, data = bert
    teacher, student = model.module.eval(), _perturbed(model, ["value"]).eval()
    with torch.no_grad(), intervening(teacher, student, "m"):
        expected = teacher(*data.inputs)
        assert not torch.allclose(student(*data.inputs), expected, atol=1e-3)


def test_gradual_schedule_goes_o_c_m():
    assert [mode_at("g", step, 12) for step in range(12)] == ["o"] * 2 + ["c"] * 2 + ["m"] * 8
    assert {mode_at("c", step, 12) for step in range(12)} == {"c"}


def test_different_structure_or_no_attention_is_refused(bert):
    model, _ = bert
    assert len(attention_parts(model.module)) == 2
    smaller = model.copy().module
    layer = smaller.encoder.encoder.layer[0].intermediate.dense
    smaller.encoder.encoder.layer[0].intermediate.dense = torch.nn.Linear(layer.in_features, 16)
    with pytest.raises(UsageError, match="same architecture before QAT"):
        check_same_architecture(model.module, smaller, "g")
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(UsageError, match="no BERT-family attention"):
        check_same_architecture(cnn, cnn, "o")


def test_the_step_count_is_state_a_checkpoint_keeps(bert):
    from compress.quant.intervention import Intervened

    model, data = bert
    loss = Intervened(torch.nn.Module(), model.module, "g", 12)
    loss.calls += 3
    again = Intervened(torch.nn.Module(), model.module, "g", 12)
    again.load_state_dict(loss.state_dict())
    assert int(again.calls) == 3 and mode_at("g", int(again.calls), 12) == "c"
