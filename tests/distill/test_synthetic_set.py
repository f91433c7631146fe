"""A synthetic set on disk: it round-trips with its metadata, comes back from the cache for the
same teacher and settings, and is refused for another teacher."""

from __future__ import annotations

import os

import pytest
import torch

from compress.distill.settings import InversionSettings
from compress.distill.synthesis import image_input_shape, make_set
from compress.distill.synthetic_set import SyntheticSet, cache_key, read_set, write_set
from compress.errors import UsageError
from compress.loading.checkpoint import load
from compress.reporting.digest import state_sha256
from tiny_models import seeded_cnn

FAST = InversionSettings(images=12, batch_size=6, steps=3, bn_weight=1.0)



def _set(sha: str = "ab" * 32) -> SyntheticSet:
    return SyntheticSet((torch.randn(5, 1, 8, 8),), torch.tensor([0, 1, 2, 3, 4]), sha, 7,
                        FAST.model_dump(), (1, 8, 8), {"bn_loss_after": 1.5, "class_counts": [1, 1, 1, 1, 1]})


def test_a_set_round_trips_with_its_metadata(tmp_path):
    original = _set()
    path = write_set(original, tmp_path / "s.safetensors")
    again = read_set(path, original.teacher_sha256)
    assert torch.equal(again.inputs[0], original.inputs[0]) and torch.equal(again.targets, original.targets)
    assert (again.teacher_sha256, again.seed, again.settings, again.input_shape, again.figures) == (
        original.teacher_sha256, 7, FAST.model_dump(), (1, 8, 8), original.figures)
    assert again.key == original.key
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # readable like every other output


def test_a_set_from_another_teacher_is_refused(tmp_path):
    path = write_set(_set("ab" * 32), tmp_path / "s.safetensors")
    with pytest.raises(UsageError, match="hash mismatch"):
        read_set(path, "cd" * 32)


def test_a_file_that_is_not_a_set_is_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(UsageError, match="cannot be read"):
        read_set(junk)


def test_the_key_changes_with_teacher_seed_and_settings():
    base = cache_key("a", 0, FAST.model_dump(), (1, 8, 8))
    assert base == cache_key("a", 0, FAST.model_dump(), (1, 8, 8))
    assert len({base, cache_key("b", 0, FAST.model_dump(), (1, 8, 8)), cache_key("a", 1, FAST.model_dump(), (1, 8, 8)),
                cache_key("a", 0, FAST.model_copy(update={"steps": 4}).model_dump(), (1, 8, 8))}) == 4


def test_the_same_request_comes_from_the_cache(tmp_path):
    teacher = load("tiny_models:cnn")
    first = make_set(teacher, FAST, tmp_path / "a", seed=0)
    second = make_set(teacher, FAST, tmp_path / "b", seed=0)
    assert first.figures["reused"] is False and second.figures["reused"] is True
    assert torch.equal(first.inputs[0], second.inputs[0])
    assert (tmp_path / "b" / "synthetic.safetensors").is_file() and (tmp_path / "b" / "synthetic_samples.png").is_file()
    other_seed = make_set(teacher, FAST, tmp_path / "c", seed=1)
    assert other_seed.figures["reused"] is False and not torch.equal(first.inputs[0], other_seed.inputs[0])


def test_a_given_set_file_is_used_only_for_its_teacher(tmp_path):
    teacher = load("tiny_models:cnn")
    made = make_set(teacher, FAST, tmp_path / "a", seed=0)
    reused = make_set(teacher, FAST, tmp_path / "b", set_file=str(tmp_path / "a" / "synthetic.safetensors"))
    assert torch.equal(made.inputs[0], reused.inputs[0]) and reused.figures["reused"]
    with pytest.raises(UsageError, match="hash mismatch"):
        make_set(load("tiny_models:wide_cnn", input_shapes=((1, 1, 8, 8),)), FAST, tmp_path / "c",
                 set_file=str(tmp_path / "a" / "synthetic.safetensors"))


def test_figures_report_coverage_and_per_layer_errors(tmp_path):
    made = make_set(load("tiny_models:cnn"), FAST, tmp_path, seed=0)
    f = made.figures
    assert f["images"] == 12 and sum(f["class_counts"]) == 12 and f["classes"] == 10
    assert 1 <= f["classes_covered"] <= 10 and 0 <= f["target_hit_rate"] <= 1
    assert len(f["bn_layers"]) == len(f["bn_mean_error_after"]) == len(f["bn_var_error_before"]) == 2
    assert made.teacher_sha256 == state_sha256(seeded_cnn())


def test_a_model_without_batchnorm_is_refused():
    with pytest.raises(UsageError, match="BatchNorm"):
        image_input_shape(load("tiny_models:cnn_without_bn"))


def test_a_set_written_before_sets_named_their_inputs_still_reads_as_images(tmp_path):
    import json

    from safetensors.torch import save_file

    images, targets = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    metadata = {"format": "compress-synthetic-set", "version": "1", "teacher_sha256": "ab" * 32, "seed": "0",
                "settings": json.dumps(FAST.model_dump()), "input_shape": "[1, 8, 8]", "figures": "{}"}
    save_file({"images": images, "targets": targets}, str(tmp_path / "old.safetensors"), metadata=metadata)
    old = read_set(tmp_path / "old.safetensors", "ab" * 32)
    assert old.input_names == ("images",) and torch.equal(old.inputs[0], images) and torch.equal(old.targets, targets)
