"""BN inversion on a tiny seeded CNN: the statistics loss goes down, targets are balanced, and the
priors and ADI's term behave as their formulas say."""

from __future__ import annotations

import torch
from hypothesis import given, settings as hsettings, strategies as st

from compress.distill.settings import InversionSettings
from compress.distill.synthetic import BNStatistics, balanced_targets, has_batchnorm, invert, js_competition, total_variation
from tiny_models import cnn_without_bn, seeded_cnn

FAST = InversionSettings(images=16, batch_size=8, steps=40, lr=0.1, bn_weight=1.0, jitter_px=1, downsample=1)


def test_inversion_lowers_the_bn_statistics_loss():
    teacher = seeded_cnn()
    made = invert(teacher, (1, 8, 8), FAST, seed=0)
    assert made.images.shape == (16, 1, 8, 8) and made.targets.shape == (16,)
    assert torch.isfinite(made.images).all()
    assert made.bn_loss_after < 0.8 * made.bn_loss_before  # the random tiny net cannot reach every statistic
    assert len(made.layer_names) == 2 and len(made.mean_error_after) == 2
    assert sum(made.mean_error_after) < sum(made.mean_error_before)


def test_inversion_leaves_the_teacher_as_it_was():
    teacher = seeded_cnn()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    invert(teacher, (1, 8, 8), FAST.model_copy(update={"steps": 3}), seed=0)
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())
    assert not teacher._forward_hooks and all(not m._forward_hooks for m in teacher.modules())


def test_same_seed_same_images_other_seed_other_images():
    short = FAST.model_copy(update={"steps": 3})
    a, b, c = (invert(seeded_cnn(), (1, 8, 8), short, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_downsampled_inputs_are_smooth_upsamplings():
    made = invert(seeded_cnn(), (1, 8, 8), FAST.model_copy(update={"steps": 3, "downsample": 4}), seed=0)
    # A 2x2 latent upsampled has far less total variation than noise of the same scale at full resolution.
    assert made.images.shape == (16, 1, 8, 8)
    assert total_variation(made.images) < 0.5 * total_variation(torch.randn_like(made.images) * made.images.std())


def test_bn_hooks_record_batch_statistics():
    teacher = seeded_cnn()
    stats = BNStatistics(teacher)
    x = torch.randn(32, 1, 8, 8)
    teacher(x)
    first = stats.batch[0]
    conv_out = teacher.stem[0](x)
    assert torch.allclose(first[0], conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(first[1], conv_out.var(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    stats.remove()


def test_has_batchnorm():
    assert has_batchnorm(seeded_cnn())
    assert not has_batchnorm(cnn_without_bn()[0])


@given(count=st.integers(1, 200), classes=st.integers(1, 20), seed=st.integers(0, 2**16))
@hsettings(max_examples=50, deadline=None)
def test_targets_are_balanced(count, classes, seed):
    targets = balanced_targets(count, classes, torch.Generator().manual_seed(seed))
    counts = torch.bincount(targets, minlength=classes)
    assert len(targets) == count and targets.max() < classes
    assert counts.max() - counts.min() <= 1


def test_total_variation_is_zero_for_a_constant_image():
    assert total_variation(torch.full((2, 1, 5, 5), 3.0)) == 0
    assert total_variation(torch.randn(2, 1, 5, 5)) > 0


def test_competition_is_low_when_student_disagrees():
    teacher = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    assert js_competition(teacher, teacher) == 1.0  # agreement: nothing to gain
    assert js_competition(-teacher, teacher) < 1.0


def test_the_generator_option_lowers_the_bn_loss_and_is_seeded():
    settings = FAST.model_copy(update={"generator": True, "downsample": 1})
    a, b = (invert(seeded_cnn(), (1, 8, 8), settings, seed=0) for _ in range(2))
    assert a.images.shape == (16, 1, 8, 8) and torch.isfinite(a.images).all()
    assert a.bn_loss_after < 0.95 * a.bn_loss_before  # the random tiny net's statistics are far from any image's
    assert torch.equal(a.images, b.images)  # its weights and latents come from the inversion's seed, not torch's global RNG
    # Genie's output BN (no affine) standardises each batch of 8 images.
    assert abs(a.images[:8].mean().item()) < 0.05 and abs(a.images[:8].std(unbiased=False).item() - 1) < 0.05


class _ShortcutRegisteredFirst(torch.nn.Module):
    """As transformers' ResNet blocks: the shortcut (16 channels) is registered before the layers
    the forward runs first (4 channels), and one BatchNorm is never called."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 1), torch.nn.BatchNorm2d(16))
        self.unused = torch.nn.BatchNorm2d(7)
        self.layer = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                         torch.nn.Conv2d(4, 16, 1), torch.nn.BatchNorm2d(16))
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x) + self.shortcut(x)
        return self.head(y.mean(dim=(2, 3)))


def test_bn_statistics_follow_the_call_order_not_the_registration_order():
    made = invert(_ShortcutRegisteredFirst().eval(), (1, 8, 8), FAST.model_copy(update={"steps": 3}), seed=0)
    assert made.layer_names == ("layer.1", "layer.4", "shortcut.1")
    assert len(made.mean_error_after) == 3 and made.bn_loss_after < made.bn_loss_before


def test_transformers_resnet_inverts(tmp_path):
    from tiny_families import saved_family

    model, _ = saved_family("resnet", tmp_path)
    made = invert(model.module, (3, 32, 32), FAST.model_copy(update={"images": 4, "batch_size": 4, "steps": 2}), seed=0)
    assert made.images.shape == (4, 3, 32, 32) and len(made.layer_names) == 8
