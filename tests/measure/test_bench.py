"""compress.bench on tiny ONNX graphs exported from seeded torch modules: real onnxruntime timings,
real file sizes, a real child process for peak RSS."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydantic
import pytest
import torch
from torch import nn

from compress.measure.bench import BenchSettings, bench, latency_stats, time_session
from compress.measure.feeds import make_feeds
from compress.errors import UsageError
from compress.onnx.session import open_session

FAST = BenchSettings(warmup=2, iters=15, rounds=2, seq_len=16)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def big_cnn() -> nn.Module:
    # ~200x the multiply-adds of tiny_cnn, so "slower" holds through machine noise.
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )  # fmt: skip


class TinyText(nn.Module):
    """Embedding bag of tokens and token types, mean-pooled over the attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.types, self.head = nn.Embedding(2048, 16), nn.Embedding(2, 16), nn.Linear(16, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.tokens(input_ids) + self.types(token_type_ids)
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((hidden * mask).sum(1) / mask.sum(1))


def export(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], path: Path) -> Path:
    axes = {name: {0: "batch", **({1: "sequence"} if x.dtype == torch.long else {})} for name, x in zip(names, inputs)}
    torch.onnx.export(
        module.eval(), inputs, str(path), input_names=names, output_names=["output"],
        dynamic_axes={**axes, "output": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    image = (torch.randn(2, 1, 8, 8),)
    export(tiny_cnn(), image, ["pixels"], folder / "tiny.onnx")
    export(big_cnn(), image, ["pixels"], folder / "big.onnx")
    ids = torch.randint(1000, 2000, (2, 5))
    text_inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    export(TinyText(), text_inputs, ["input_ids", "attention_mask", "token_type_ids"], folder / "text.onnx")
    return folder


def test_feeds_follow_the_model_input_specs(onnx_dir: Path) -> None:
    text = onnx_dir / "text.onnx"
    feeds = make_feeds(open_session(text), text, batch=3, seq_len=7, seed=0)
    assert {k: (v.shape, v.dtype) for k, v in feeds.items()} == {
        "input_ids": ((3, 7), np.int64), "attention_mask": ((3, 7), np.int64), "token_type_ids": ((3, 7), np.int64),
    }  # fmt: skip
    assert feeds["input_ids"].min() >= 1000 and feeds["input_ids"].max() < 2000
    assert len(np.unique(feeds["input_ids"])) > 1
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()

    image = onnx_dir / "tiny.onnx"
    session = open_session(image)
    pixels = make_feeds(session, image, batch=5, seq_len=7, seed=1)["pixels"]
    assert pixels.shape == (5, 1, 8, 8) and pixels.dtype == np.float32
    assert 0.5 < pixels.std() < 1.5
    np.testing.assert_array_equal(pixels, make_feeds(session, image, batch=5, seq_len=7, seed=1)["pixels"])
    assert not np.array_equal(pixels, make_feeds(session, image, batch=5, seq_len=7, seed=2)["pixels"])


def test_time_session_gives_one_positive_time_per_timed_call(onnx_dir: Path) -> None:
    path = onnx_dir / "tiny.onnx"
    session = open_session(path)
    times_ms = time_session(session, make_feeds(session, path, 1, 1, 0), warmup=3, iters=7)
    assert len(times_ms) == 7
    assert all(0 < t < 1000 for t in times_ms)


def test_latency_stats_on_known_samples() -> None:
    stats = latency_stats([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], batch=4)
    assert stats["p50_ms"] == 2.5 and stats["mean_ms"] == 3.0
    assert stats["throughput"] == pytest.approx(4 * 1000 / 3.0)
    assert stats["spread_pct"] == pytest.approx(100 * (4.0 - 2.0) / 2.5)


def test_bench_sweeps_batches_and_reports_every_figure(onnx_dir: Path) -> None:
    messages: list[str] = []
    settings = FAST.model_copy(update={"batch_sizes": (1, 4)})
    report = bench([onnx_dir / "tiny.onnx", onnx_dir / "text.onnx"], settings, log=messages.append)

    assert [(r["model"], r["batch"], r["threads"]) for r in report.rows] == [
        ("tiny", 1, 1), ("text", 1, 1), ("tiny", 4, 1), ("text", 4, 1),
    ]  # fmt: skip
    for row in report.rows:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"])
        assert row["bytes"] == Path(row["path"]).stat().st_size
        assert row["spread_pct"] >= 0 and "ratio" not in row
    for info in report.models.values():
        # A process with numpy and onnxruntime loaded holds tens of MB; loading a model adds to it.
        assert 10 < info["rss_base_mb"] <= info["rss_mb"] < 2000
    assert any("round 2/2" in m for m in messages) and any("peak RSS" in m for m in messages)

    data = report.to_json()
    assert data["onnxruntime"] == ort.__version__ and data["settings"]["batch_sizes"] == [1, 4]
    assert data["cpu"]["logical_cpus"] >= 1 and data["baseline"] is None
    assert set(data["models"]) == {"tiny", "text"}
    text = data["models"]["text"]
    assert text["bytes"] == (onnx_dir / "text.onnx").stat().st_size and text["rss_mb"] > 0
    assert set(text["results"]) == {"b1_t1", "b4_t1"}
    assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "bytes", "spread_pct"} <= set(text["results"]["b4_t1"])


def test_a_model_against_a_copy_of_itself_has_ratio_near_one(onnx_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copy(onnx_dir / "tiny.onnx", tmp_path / "copy.onnx")
    report = bench([copy], FAST.model_copy(update={"iters": 40, "rounds": 3}), baseline=onnx_dir / "tiny.onnx")

    assert report.baseline == "tiny" and [r["model"] for r in report.rows] == ["tiny", "copy"]
    assert report.row("tiny", 1, 1)["ratio"] == 1.0 and report.row("tiny", 1, 1)["speedup"] == 1.0
    copy_row = report.row("copy", 1, 1)
    assert 0.5 < copy_row["ratio"] < 2.0
    assert copy_row["speedup"] == pytest.approx(1 / copy_row["ratio"])


def test_a_bigger_model_is_slower_at_every_thread_count(onnx_dir: Path) -> None:
    tiny, big = onnx_dir / "tiny.onnx", onnx_dir / "big.onnx"
    report = bench([tiny, big], FAST.model_copy(update={"threads": (1, 2)}), baseline=tiny)
    for threads in (1, 2):
        assert report.row("big", 1, threads)["p50_ms"] > 3 * report.row("tiny", 1, threads)["p50_ms"]
        assert report.row("big", 1, threads)["speedup"] < 1 / 3
    assert report.models["big"]["bytes"] > 10 * report.models["tiny"]["bytes"]
    # The RSS child never imports torch (~200 MB on its own), so small models stay small.
    assert report.models["tiny"]["rss_mb"] < 150


def test_files_that_are_not_onnx_are_bad_input(onnx_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("these are notes, not a graph\n")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((onnx_dir / "big.onnx").read_bytes()[:5000])
    for path in (tmp_path / "missing.onnx", text, truncated, tmp_path):
        with pytest.raises(UsageError) as caught:
            bench([path], FAST)
        assert caught.value.thing == "ONNX file" and Path(caught.value.value) == path


def test_a_file_listed_twice_is_bad_input(onnx_dir: Path) -> None:
    with pytest.raises(UsageError, match="listed twice"):
        bench([onnx_dir / "tiny.onnx", onnx_dir / "tiny.onnx"], FAST)


def test_a_fixed_batch_axis_refuses_other_batch_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fixed = tmp_path / "fixed.onnx"
    image = (torch.randn(1, 1, 8, 8),)
    torch.onnx.export(tiny_cnn().eval(), image, str(fixed), input_names=["pixels"], opset_version=17, dynamo=False)
    with pytest.raises(UsageError, match="fixed batch of 1"):
        bench([fixed], FAST.model_copy(update={"batch_sizes": (2,)}))


def test_settings_refuse_bad_values_and_drop_repeats() -> None:
    bad_fields = [{"batch_sizes": (0,)}, {"batch_sizes": ()}, {"threads": (-1,)}, {"iters": 0}, {"rounds": 0},
                  {"warmup": -1}, {"iterations": 5}]
    for bad in bad_fields:
        with pytest.raises(pydantic.ValidationError):
            BenchSettings(**bad)
    assert BenchSettings(batch_sizes=(8, 1, 8)).batch_sizes == (8, 1)
    assert all(field.description for field in BenchSettings.model_fields.values())
