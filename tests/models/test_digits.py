"""The bundled `digits` model: its data splits, its architecture and its committed weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compress.errors import UsageError
from compress.model import Source
from compress.models import digits, train_digits


def _image_keys(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_splits_have_the_documented_sizes_and_types() -> None:
    train_images, train_labels = digits.load_split("train")
    test_images, test_labels = digits.load_split("test")
    assert train_images.shape == (1437, 1, 32, 32) and train_labels.shape == (1437,)
    assert test_images.shape == (360, 1, 32, 32) and test_labels.shape == (360,)
    assert train_images.dtype == test_images.dtype == torch.float32
    assert train_labels.dtype == test_labels.dtype == torch.int64


def test_no_test_image_is_in_the_train_split() -> None:
    train_keys = _image_keys(digits.load_split("train")[0])
    test_keys = _image_keys(digits.load_split("test")[0])
    assert len(train_keys) == 1437 and len(test_keys) == 360
    assert not train_keys & test_keys


def test_split_is_stratified() -> None:
    train_counts = Counter(digits.load_split("train")[1].tolist())
    test_counts = Counter(digits.load_split("test")[1].tolist())
    assert sorted(test_counts) == list(range(10))
    for label in range(10):
        total = train_counts[label] + test_counts[label]
        assert abs(test_counts[label] - 0.2 * total) <= 1, label


def test_split_is_deterministic_and_callers_cannot_change_it() -> None:
    first_images, first_labels = digits.load_split("test")
    first_images.zero_()
    second_images, second_labels = digits.load_split("test")
    third_images, _ = digits.load_split("test")
    assert torch.equal(first_labels, second_labels)
    assert torch.equal(second_images, third_images)
    assert second_images.abs().sum() > 0


def test_train_split_is_standardised_with_its_own_statistics() -> None:
    train_images, _ = digits.load_split("train")
    test_images, _ = digits.load_split("test")
    assert train_images.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train_images.std().item() == pytest.approx(1.0, abs=1e-5)
    # The test split uses the train statistics, so its own are close but not exact.
    assert test_images.mean().item() == pytest.approx(0.0, abs=0.1)
    assert test_images.std().item() == pytest.approx(1.0, abs=0.1)


def test_unknown_split_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="digits split"):
        digits.load_split("validation")  # type: ignore[arg-type]


def test_committed_weights_reach_99_percent_on_the_test_split() -> None:
    module, _ = digits.build()
    images, labels = digits.load_split("test")
    with torch.no_grad():
        predictions = module(images).argmax(dim=1)
    assert (predictions == labels).float().mean().item() >= 0.99


def test_committed_weights_are_small_and_hold_batchnorm_statistics() -> None:
    assert digits.WEIGHTS_PATH.stat().st_size < 2_000_000
    state = load_file(str(digits.WEIGHTS_PATH))
    running_vars = [tensor for name, tensor in state.items() if name.endswith("running_var")]
    assert len(running_vars) == 1 + 9 * 2 + 2  # stem, two per block, two shortcuts
    # Trained statistics, not the initial ones (all ones).
    assert all(not torch.allclose(var, torch.ones_like(var)) for var in running_vars)


@pytest.mark.parametrize("batch", [1, 5])
def test_build_gives_eval_module_and_ten_logits(batch: int) -> None:
    module, inputs = digits.build()
    assert not module.training
    assert len(inputs) == 1 and inputs[0].shape == (1, 1, 32, 32)
    with torch.no_grad():
        logits = module(inputs[0].expand(batch, -1, -1, -1))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


def test_half_width_student_has_the_same_layout_and_a_quarter_of_the_parameters() -> None:
    teacher, student = digits.build_module(16), digits.build_module(8)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student_params = sum(p.numel() for p in student.parameters())
    assert teacher_params == 272_186
    assert 0.24 < student_params / teacher_params < 0.27
    assert [n for n, _ in teacher.named_modules()] == [n for n, _ in student.named_modules()]
    assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_bad_width_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="digits width"):
        digits.build_module(0)


def test_state_dict_round_trips_through_safetensors(tmp_path: Path) -> None:
    module, (image,) = digits.build()
    path = tmp_path / "copy.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    fresh, _ = digits.build(weights=False)
    with torch.no_grad():
        assert not torch.allclose(fresh(image), module(image))
        fresh.load_state_dict(load_file(str(path)))
        assert torch.equal(fresh(image), module(image))


def test_load_gives_the_bundled_model() -> None:
    source = Source(kind="bundled", ref="digits")
    model = digits.load(source)
    assert (model.name, model.task, model.eval_data) == ("digits", "classification", "digits:test")
    assert model.input_names == ("input",) and model.source == source
    assert model(*model.example_inputs).shape == (1, 10)


def test_shift_images_moves_pixels_by_at_most_the_maximum() -> None:
    images, _ = digits.load_split("train")
    batch = images[:8]
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(train_digits.shift_images(batch, 0.0, generator), batch, atol=1e-5)
    shifted = train_digits.shift_images(batch, 3.0, generator)
    assert shifted.shape == batch.shape and not torch.allclose(shifted, batch, atol=1e-2)
    # The ink's centre moves by up to the 3 px shift in each direction (plus border effects).
    moved = _ink_centre(shifted) - _ink_centre(batch)
    assert moved.abs().max() <= 3.5 and moved.abs().max() > 0.5


def _ink_centre(images: torch.Tensor) -> torch.Tensor:
    """Row and column of each image's centre of mass, with its background (minimum) as zero."""
    ink = images - images.amin(dim=(2, 3), keepdim=True)
    coords = torch.arange(images.shape[-1], dtype=images.dtype)
    total = ink.sum(dim=(1, 2, 3))
    rows = (ink.sum(dim=3) * coords).sum(dim=(1, 2)) / total
    cols = (ink.sum(dim=2) * coords).sum(dim=(1, 2)) / total
    return torch.stack([rows, cols], dim=1)


@pytest.mark.slow
def test_training_script_writes_loadable_weights(tmp_path: Path) -> None:
    out = tmp_path / "digits.safetensors"
    # The same thread count as the test process, since main() sets it for the whole process.
    train_digits.main(["--out", str(out), "--epochs", "1", "--threads", str(torch.get_num_threads())])
    module = digits.build_module()
    module.load_state_dict(load_file(str(out)))  # strict: every parameter and BN buffer is there
    with safe_open(str(out), framework="pt") as handle:
        accuracy = float(handle.metadata()["test_accuracy"])
    images, labels = digits.load_split("test")
    measured = train_digits.accuracy(module, images, labels)
    assert measured == pytest.approx(accuracy, abs=1e-4)
    # BatchNorm statistics were gathered in train mode and saved: 23 batches moved them off one.
    assert not torch.allclose(module.bn1.running_var, torch.ones_like(module.bn1.running_var))
    assert module.bn1.num_batches_tracked.item() == 23
