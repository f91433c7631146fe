"""Teacher Intervention: each mode swaps the teacher's tensor in at its place, so what lies
before that place in the student cannot change the output; TI-G's schedule; CNN blocks fed the
teacher's block outputs; refusals."""

from __future__ import annotations

import pytest
import torch

from compress.errors import UsageError
from compress.quant.intervention import attention_parts, check_same_architecture, cnn_blocks, intervening, mode_at
from compress.models.digits import build_module
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


def _resnet20(seed: int = 0) -> torch.nn.Module:
    """A width-4 digits ResNet-20 with every weight and BatchNorm statistic random (the bundled
    init zeroes each block's last BN, which would make every block the identity)."""
    torch.manual_seed(seed)
    module = build_module(4).eval()
    with torch.no_grad():
        for tensor in (*module.parameters(), *(b for n, b in module.named_buffers() if "running" in n)):
            tensor.copy_(torch.rand_like(tensor) + 0.5 if tensor.dim() == 1 else torch.randn_like(tensor) * 0.5)
    return module


def _noisy_copy(module: torch.nn.Module, prefixes: tuple[str, ...]) -> torch.nn.Module:
    import copy

    student = copy.deepcopy(module)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if name.startswith(prefixes):
                param.add_(torch.randn_like(param))
    return student


def test_cnn_blocks_are_the_residual_blocks_of_the_outermost_sequentials(tmp_path):
    assert cnn_blocks(_resnet20()) == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    hf, _ = saved_family("resnet", tmp_path)
    assert cnn_blocks(hf.module) == ["inner.resnet.encoder.stages.0.layers.0", "inner.resnet.encoder.stages.1.layers.0"]
    flat = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    assert cnn_blocks(flat) == []  # plain layers, no blocks
    groups = torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU()) for _ in range(3)), torch.nn.Flatten())
    assert cnn_blocks(groups) == ["0", "1", "2"]  # a user CNN of conv groups; the parameter-free Flatten is no block


def test_every_student_block_reads_the_teachers_block_output():
    """Noise everywhere but the last block and the head: with intervention the last block reads the
    teacher's output of the block before it, so the logits are the teacher's, and every block's own
    error is measured on the teacher's input (zero for the clean last block)."""
    teacher = _resnet20()
    student = _noisy_copy(teacher, ("conv1", "bn1", "layer1", "layer2", "layer3.0", "layer3.1"))
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = teacher(x)
        assert not torch.allclose(student(x), expected, atol=1e-2)
        with intervening(teacher, student, "block") as blocks:
            teacher(x)  # the KD loss runs the teacher first; the student's forward follows
            got = student(x)
        torch.testing.assert_close(got, expected)
        assert blocks.student[-1] is not None and torch.equal(blocks.student[-1], blocks.teacher[-1])
        assert all(not torch.allclose(s, t, atol=1e-2) for s, t in zip(blocks.student[:-1], blocks.teacher[:-1]))
        assert not torch.allclose(student(x), expected, atol=1e-2)  # the hooks are gone afterwards


def test_one_noisy_block_is_hidden_from_the_rest_and_only_its_own_term_counts():
    from compress.quant.intervention import BlockOutputs, block_mse

    teacher = _resnet20()
    student = _noisy_copy(teacher, ("layer2.1",))
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), intervening(teacher, student, "block") as blocks:
        expected = teacher(x)
        torch.testing.assert_close(student(x), expected)
    errors = [float(block_mse(BlockOutputs([t], [s]))) for s, t in zip(blocks.student, blocks.teacher)]
    assert errors[4] > 0.01 and all(e == 0 for i, e in enumerate(errors) if i != 4)
    assert float(block_mse(blocks)) == pytest.approx(errors[4] / 9)


def test_the_intervened_loss_trains_every_block_and_not_the_stem():
    """The teacher's inputs cut the gradient between blocks: the per-block term must reach each."""
    from compress.data.specs import Dataset
    from compress.distill.losses import KDLoss, KDWeights
    from compress.quant.intervention import Intervened

    teacher = _resnet20()
    student = _noisy_copy(teacher, ("conv1", "layer")).train()
    loss = Intervened(KDLoss(teacher, student, task="classification", weights=KDWeights(kl=1.0)), teacher, "block", 4)
    loss(student, Dataset("x", (torch.randn(4, 1, 32, 32),))).backward()
    for name in cnn_blocks(teacher):
        grads = [p.grad for p in student.get_submodule(name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert student.conv1.weight.grad is None  # its output never reaches the loss while intervened


def test_a_mode_for_the_other_class_of_model_is_refused_naming_the_right_ones(bert):
    model, _ = bert
    cnn = _resnet20()
    with pytest.raises(UsageError, match="o, c, m and g are for Transformer encoders: for a CNN use --intervention block"):
        check_same_architecture(cnn, cnn, "g")
    with pytest.raises(UsageError, match="is a Transformer encoder: use --intervention o, c, m or g"):
        check_same_architecture(model.module, model.module, "block")
    flat = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(UsageError, match="has no blocks to feed"):
        check_same_architecture(flat, flat, "block")
    narrower = build_module(2)
    with pytest.raises(UsageError, match="same architecture before QAT"):
        check_same_architecture(cnn, narrower, "block")
