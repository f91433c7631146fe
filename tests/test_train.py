from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data.specs import Dataset
from compress.errors import RunFailed, UsageError
from compress.train import Checkpointing, FitConfig, changed_keys, fit

TRUE_WEIGHTS = torch.tensor([[1.5, -2.0, 0.5, 3.0]])


def _regression(rows: int = 256) -> Dataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 4, generator=g)
    return Dataset("regression", (x,), x @ TRUE_WEIGHTS.T)


def _mse(student: nn.Module, batch: Dataset) -> torch.Tensor:
    return F.mse_loss(student(*batch.inputs), batch.labels)


def _student(seed: int = 0) -> nn.Module:
    """A small MLP with dropout (so the loop's own RNG seeding matters), the same for a seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


CONFIG = FitConfig(steps=150, lr=1e-2, batch_size=32, warmup_steps=10, eval_every=50)


def test_fit_lowers_the_loss_and_reports_the_curve():
    data = _regression()
    student = _student()
    before = _mse(student.eval(), data).item()
    result = fit(student, _mse, data, CONFIG)
    after = _mse(student, data).item()
    assert after < before / 10
    assert [p.step for p in result.history] == [50, 100, 150]
    assert result.loss_end < result.loss_start
    assert result.best_step == 150 and result.steps == 150 and result.seconds > 0
    assert not student.training  # handed back in eval mode


def test_fit_is_deterministic_under_a_seed_and_leaves_the_global_rng_alone():
    data = _regression()
    rng_before = torch.get_rng_state()
    first, second, other = _student(), _student(), _student()
    fit(first, _mse, data, CONFIG, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    fit(second, _mse, data, CONFIG, seed=7)
    fit(other, _mse, data, CONFIG, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_fit_keeps_the_best_held_out_state():
    data = _regression()
    student = _student()
    scores = iter([0.1, 0.5, 0.9, 0.3, 0.2])  # at steps 0, 30, 60, 90, 120
    states = []

    def evaluate(module: nn.Module) -> float:
        assert not module.training
        states.append({k: v.clone() for k, v in module.state_dict().items()})
        return next(scores)

    config = FitConfig(steps=120, lr=1e-2, batch_size=32, eval_every=30)
    result = fit(student, _mse, data, config, evaluate=evaluate)
    assert [(p.step, p.metric) for p in result.history] == [(0, 0.1), (30, 0.5), (60, 0.9), (90, 0.3), (120, 0.2)]
    assert result.history[0].loss is None
    assert (result.best_step, result.best_metric, result.final_metric) == (60, 0.9, 0.2)
    assert all(torch.equal(v, states[2][k]) for k, v in student.state_dict().items())
    assert not all(torch.equal(v, states[-1][k]) for k, v in student.state_dict().items())


def test_on_a_tie_fit_keeps_the_later_state():
    # A small held-aside set saturates (agreement 1.0 from early on); the later state has trained longer.
    scores = iter([0.5, 1.0, 1.0, 1.0])
    result = fit(_student(), _mse, _regression(), FitConfig(steps=30, lr=1e-2, batch_size=32, eval_every=10), evaluate=lambda _: next(scores))
    assert (result.best_step, result.best_metric) == (30, 1.0)


def test_fit_never_returns_a_student_worse_than_its_start():
    student = _student()
    start = {k: v.clone() for k, v in student.state_dict().items()}
    scores = iter([1.0, 0.5, 0.4])
    result = fit(student, _mse, _regression(), FitConfig(steps=20, lr=1e-2, batch_size=32, eval_every=10), evaluate=lambda _: next(scores))
    assert result.best_step == 0
    assert all(torch.equal(v, start[k]) for k, v in student.state_dict().items())


def test_without_keep_best_fit_ends_on_its_last_state_and_only_draws_the_curve():
    scores = iter([0.5, 0.9, 0.1, 0.2])  # the best evaluation (step 10) is not the last
    student = _student()
    config = FitConfig(steps=30, lr=1e-2, batch_size=32, eval_every=10, keep_best=False)
    result = fit(student, _mse, _regression(), config, evaluate=lambda _: next(scores))
    assert [p.metric for p in result.history] == [0.5, 0.9, 0.1, 0.2]
    assert (result.best_step, result.best_metric, result.final_metric) == (30, 0.2, 0.2)
    again = _student()
    fit(again, _mse, _regression(), FitConfig(steps=30, lr=1e-2, batch_size=32, eval_every=0))
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))


def test_fit_trains_the_parameters_of_a_loss_module():
    class Scaled(nn.Module):  # a loss with a learned part, like KD's width projections
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(0.1))

        def forward(self, student: nn.Module, batch: Dataset) -> torch.Tensor:
            return F.mse_loss(self.scale * student(*batch.inputs), batch.labels)

    loss = Scaled()
    fit(_student(), loss, _regression(), FitConfig(steps=30, lr=1e-2, batch_size=32))
    assert loss.scale.item() != pytest.approx(0.1)


def test_every_batch_is_full_and_epochs_are_reshuffled():
    seen = []

    def record(student: nn.Module, batch: Dataset) -> torch.Tensor:
        seen.append(batch.inputs[0][:, 0].clone())
        return _mse(student, batch)

    fit(_student(), record, _regression(100), FitConfig(steps=6, lr=1e-3, batch_size=32))
    assert [len(b) for b in seen] == [32] * 6  # 100 rows: 3 full batches per epoch, the last 4 rows dropped
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))


def test_non_finite_loss_fails_the_run_with_the_step():
    def explode(student: nn.Module, batch: Dataset) -> torch.Tensor:
        return student(*batch.inputs).sum() * float("inf")

    with pytest.raises(RunFailed, match=r"training loss became (inf|nan) at step 1 of 5; lower the learning rate"):
        fit(_student(), explode, _regression(), FitConfig(steps=5, lr=1e-3, batch_size=32))


def test_schedule_warms_up_then_decays_to_the_floor():
    config = FitConfig(steps=110, lr=1.0, batch_size=1, warmup_steps=10, min_lr_ratio=0.1)
    assert config.lr_at(0) == pytest.approx(0.1)
    assert config.lr_at(9) == pytest.approx(1.0)
    assert config.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert config.lr_at(110) == pytest.approx(0.1)
    assert all(config.lr_at(s) >= config.lr_at(s + 1) for s in range(10, 110))


def test_bad_settings_are_named_together():
    with pytest.raises(UsageError, match=r"steps 0 \(must be >= 1\); lr -1 \(must be > 0\)"):
        FitConfig(steps=0, lr=-1, batch_size=8)


def _interrupted_at(step: int):
    calls = {"n": 0}

    def loss(student: nn.Module, batch: Dataset) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt  # a Ctrl-C in the middle of step `step`
        return _mse(student, batch)

    return loss


def test_a_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data, config = _regression(), FitConfig(steps=60, lr=1e-2, batch_size=32, warmup_steps=5, eval_every=10)
    evaluate = lambda module: -_mse(module, data).item()  # noqa: E731
    whole = _student()
    expected = fit(whole, _mse, data, config, evaluate=evaluate, seed=3)

    checkpoint = Checkpointing(tmp_path / "fit.pt", every=10, identity={"data": "regression"})
    student = _student()
    with pytest.raises(KeyboardInterrupt):
        fit(student, _interrupted_at(27), data, config, evaluate=evaluate, seed=3, checkpointing=checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == ["fit.pt"]  # no temp file left by the kill
    logged = []
    resumed = _student()  # a fresh process, which built the same student again
    result = fit(resumed, _mse, data, config, evaluate=evaluate, seed=3, log=logged.append,
                 checkpointing=replace(checkpoint, resume=True))
    assert logged[0].startswith("fit: resuming at step 20/60")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert result.history == expected.history and result.best_step == expected.best_step
    assert result.loss_start == expected.loss_start


def test_resume_refuses_a_checkpoint_from_other_settings_naming_them(tmp_path):
    data = _regression()
    checkpoint = Checkpointing(tmp_path / "fit.pt", every=5, identity={"data": "a", "kl": 1.0})
    fit(_student(), _mse, data, FitConfig(steps=5, lr=1e-2, batch_size=32), checkpointing=checkpoint)
    changed = replace(checkpoint, resume=True, identity={"data": "b", "kl": 1.0})
    with pytest.raises(UsageError, match=r"other settings \(data, fit.lr differ\)"):
        fit(_student(), _mse, data, FitConfig(steps=5, lr=1e-3, batch_size=32), checkpointing=changed)
    with pytest.raises(UsageError, match=r"other settings \(student differ\)"):  # started from other weights
        fit(_student(seed=1), _mse, data, FitConfig(steps=5, lr=1e-2, batch_size=32), checkpointing=replace(checkpoint, resume=True))


def test_resuming_without_a_checkpoint_starts_at_step_0(tmp_path):
    """A run killed before this fit's first checkpoint: its resumed fit trains from the start."""
    data, config = _regression(), FitConfig(steps=5, lr=1e-2, batch_size=32)
    fresh, resumed = _student(), _student()
    fit(fresh, _mse, data, config)
    logged = []
    fit(resumed, _mse, data, config, log=logged.append, checkpointing=Checkpointing(tmp_path / "missing.pt", every=5, resume=True))
    assert not any("resuming" in line for line in logged)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), resumed.state_dict().values()))


def test_a_non_finite_loss_names_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def blows_up_at_step_8(student: nn.Module, batch: Dataset) -> torch.Tensor:
        calls["n"] += 1
        return _mse(student, batch) * (float("nan") if calls["n"] == 8 else 1.0)

    checkpoint = Checkpointing(tmp_path / "fit.pt", every=5)
    with pytest.raises(RunFailed, match=r"became nan at step 8 of 10; stopped at the last good checkpoint, step 5 \(.*fit.pt\)"):
        fit(_student(), blows_up_at_step_8, _regression(), FitConfig(steps=10, lr=1e-2, batch_size=32), checkpointing=checkpoint)
    assert torch.load(tmp_path / "fit.pt", weights_only=True)["step"] == 5


def test_a_checkpoint_never_holds_non_finite_weights(tmp_path):
    """A finite loss whose step overflows the weights: the save after it refuses, and the file
    keeps the last finite state."""
    calls = {"n": 0}

    def overflows_at_step_10(student: nn.Module, batch: Dataset) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 10:
            student[0].weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
        return _mse(student, batch)

    config = FitConfig(steps=10, lr=1e-2, batch_size=32, grad_clip=0)
    with pytest.raises(RunFailed, match=r"weights became non-finite by step 10 of 10; stopped at the last good checkpoint, step 5"):
        fit(_student(), overflows_at_step_10, _regression(), config, checkpointing=Checkpointing(tmp_path / "fit.pt", every=5))
    saved = torch.load(tmp_path / "fit.pt", weights_only=True)
    assert saved["step"] == 5 and all(torch.isfinite(v).all() for v in saved["student"].values())


def test_changed_keys_are_dotted_paths_into_mappings_and_lists():
    saved = {"steps": [{"lr": 1}, {"kl": 1}], "seed": 0, "gone": 1}
    current = {"steps": [{"lr": 2}, {"kl": 1}], "seed": 0, "new": 1}
    assert changed_keys(saved, current) == ["gone", "new", "steps.0.lr"]
    assert changed_keys({"steps": [1]}, {"steps": [1, 2]}) == ["steps"]
