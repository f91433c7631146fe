"""compress.bench on tiny ONNX graphs exported from seeded torch modules: real onnxruntime timings,
real file sizes, a real child process for peak RSS."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydantic
import pytest
import torch
from torch import nn

from compress.measure.bench import BenchSettings, bench, latency_stats, median_interval, paired_interval
from compress.measure.feeds import make_feeds
from compress.errors import UsageError
from compress.onnx.session import open_session

FAST = BenchSettings(warmup=1, min_calls=20, target_pct=5.0, max_seconds=1.0, seq_len=16)


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


def test_median_interval_is_the_sign_test_interval() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0]
    # n = 6: 2 / 2**6 < 0.05, so the interval is the whole sample; n = 5 has none.
    assert median_interval(values) == (3.5, 1.0, 6.0)
    with pytest.raises(ValueError, match="too few"):
        median_interval(values[:5])
    # n = 100: the order statistics 40 and 61 (1-based), the textbook values.
    assert median_interval(np.arange(100.0)) == (49.5, 39.0, 60.0)


def test_paired_interval_covers_the_true_median_at_least_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials = 400
    covered = 0
    for _ in range(trials):
        values = rng.standard_t(3, size=int(rng.integers(12, 400)))  # heavy tails, median 0
        median, low, high = paired_interval(values)
        assert low <= median <= high
        covered += low <= 0.0 <= high
    assert covered / trials >= 0.93


def test_latency_stats_on_known_samples() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 2.0, 4.0, 6.0], batch=4)
    assert stats["p50_ms"] == 2.5 and stats["mean_ms"] == 3.0
    assert stats["throughput"] == pytest.approx(4 * 1000 / 3.0)
    assert stats["p50_low_ms"] == pytest.approx(1.0) and stats["p50_high_ms"] == pytest.approx(6.0)


def test_bench_sweeps_batches_and_reports_every_figure(onnx_dir: Path) -> None:
    messages: list[str] = []
    settings = FAST.model_copy(update={"batch_sizes": (1, 4)})
    report = bench([onnx_dir / "tiny.onnx", onnx_dir / "text.onnx"], settings, log=messages.append)

    assert [(r["model"], r["batch"], r["threads"]) for r in report.rows] == [
        ("tiny", 1, 1), ("text", 1, 1), ("tiny", 4, 1), ("text", 4, 1),
    ]  # fmt: skip
    for row in report.rows:
        assert 0 < row["p50_low_ms"] <= row["p50_ms"] <= row["p50_high_ms"] and row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"])
        assert row["bytes"] == Path(row["path"]).stat().st_size
        assert row["calls"] >= settings.min_calls and row["stopped"] in ("converged", "time cap")
        # process CPU time over wall time of a 1-thread session: at most a little over 1 thread.
        assert 0 < row["cpu_share"] < 1.5 and row["cpu_starved"] == (row["cpu_share"] < 0.9)
        assert row["load_1m"] >= 0 and "latency_ratio" not in row
    for info in report.models.values():
        # A process with numpy and onnxruntime loaded holds tens of MB; loading a model adds to it.
        assert 10 < info["rss_base_mb"] <= info["rss_mb"] < 2000
    assert any("stopped:" in m for m in messages) and any("peak RSS" in m for m in messages)

    data = report.to_json()
    assert data["onnxruntime"] == ort.__version__ and data["settings"]["batch_sizes"] == [1, 4]
    assert data["cpu"]["logical_cpus"] >= 1 and data["baseline"] is None
    assert set(data["models"]) == {"tiny", "text"}
    text = data["models"]["text"]
    assert text["bytes"] == (onnx_dir / "text.onnx").stat().st_size and text["rss_mb"] > 0
    assert set(text["results"]) == {"b1_t1", "b4_t1"}
    assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "bytes", "calls", "stopped", "cpu_share"} <= set(text["results"]["b4_t1"])


def test_a_model_against_a_copy_of_itself_has_an_interval_around_one(onnx_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copy(onnx_dir / "tiny.onnx", tmp_path / "copy.onnx")
    report = bench([copy], FAST.model_copy(update={"target_pct": 3.0, "max_seconds": 3.0}), baseline=onnx_dir / "tiny.onnx")

    assert report.baseline == "tiny" and [r["model"] for r in report.rows] == ["tiny", "copy"]
    base = report.row("tiny", 1, 1)
    assert (base["latency_ratio"], base["latency_ratio_low"], base["latency_ratio_high"], base["speedup"]) == (1.0, 1.0, 1.0, 1.0)
    copy_row = report.row("copy", 1, 1)
    assert copy_row["latency_ratio_low"] <= copy_row["latency_ratio"] <= copy_row["latency_ratio_high"]
    assert 0.8 < copy_row["latency_ratio"] < 1.25
    assert copy_row["speedup"] == pytest.approx(1 / copy_row["latency_ratio"])
    assert copy_row["calls"] == base["calls"]  # paired: one call each per turn


def test_a_bigger_model_is_slower_with_confidence_at_every_thread_count(onnx_dir: Path) -> None:
    tiny, big = onnx_dir / "tiny.onnx", onnx_dir / "big.onnx"
    threads = (1, 2) if os.cpu_count() and os.cpu_count() >= 2 else (1,)
    report = bench([tiny, big], FAST.model_copy(update={"threads": threads}), baseline=tiny)
    for t in threads:
        assert report.row("big", 1, t)["latency_ratio_low"] > 3
        assert report.row("big", 1, t)["speedup"] < 1 / 3
    assert report.models["big"]["bytes"] > 10 * report.models["tiny"]["bytes"]
    # The RSS child never imports torch (~200 MB on its own), so small models stay small.
    assert report.models["tiny"]["rss_mb"] < 150


def test_timing_stops_when_the_interval_is_narrow_or_at_the_time_cap(onnx_dir: Path) -> None:
    tiny, big = onnx_dir / "tiny.onnx", onnx_dir / "big.onnx"
    loose = bench([tiny, big], FAST.model_copy(update={"target_pct": 50.0}), baseline=tiny)
    assert loose.row("big", 1, 1)["stopped"] == "converged" and FAST.min_calls <= loose.row("big", 1, 1)["calls"] < 100
    tight = bench([tiny, big], FAST.model_copy(update={"target_pct": 0.001, "max_seconds": 0.5}), baseline=tiny)
    row = tight.row("big", 1, 1)
    assert row["stopped"] == "time cap" and row["seconds"] >= 0.5
    assert row["latency_ratio_high"] - row["latency_ratio_low"] > 0


def test_more_threads_than_cpus_is_bad_input(onnx_dir: Path) -> None:
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(UsageError) as caught:
        bench([onnx_dir / "tiny.onnx"], FAST.model_copy(update={"threads": (too_many,)}))
    assert caught.value.thing == "bench threads" and caught.value.value == too_many
    assert "usable CPU" in caught.value.fix


def test_a_batch_that_cannot_fit_in_memory_is_bad_input_before_timing(onnx_dir: Path) -> None:
    import psutil

    # Ten times the available memory in input bytes alone (1 x 8 x 8 float32 = 256 bytes per item).
    batch = int(10 * psutil.virtual_memory().available / 256)
    messages: list[str] = []
    with pytest.raises(UsageError) as caught:
        bench([onnx_dir / "tiny.onnx"], FAST.model_copy(update={"batch_sizes": (1, batch)}), log=messages.append)
    assert caught.value.thing == "batch size" and caught.value.value == batch
    assert "use a batch of at most" in caught.value.fix
    assert not any("stopped" in m for m in messages)


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
    bad_fields = [{"batch_sizes": (0,)}, {"batch_sizes": ()}, {"threads": (-1,)}, {"min_calls": 11}, {"target_pct": 0},
                  {"max_seconds": 0}, {"warmup": -1}, {"iterations": 5}]
    for bad in bad_fields:
        with pytest.raises(pydantic.ValidationError):
            BenchSettings(**bad)
    assert BenchSettings(batch_sizes=(8, 1, 8)).batch_sizes == (8, 1)
    assert all(field.description for field in BenchSettings.model_fields.values())


class SmallVocabText(nn.Module):
    """A text model whose vocabulary (300 tokens) is far below the ids BERT-family models take."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.head = nn.Embedding(300, 8), nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.tokens(input_ids) * mask).sum(1) / mask.sum(1))


def test_token_ids_stay_within_the_vocabulary_read_from_the_graph(onnx_dir: Path, tmp_path: Path) -> None:
    from compress.measure.feeds import token_id_range, vocabulary_size

    ids = torch.randint(0, 300, (2, 5))
    small = export(SmallVocabText(), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], tmp_path / "small.onnx")
    assert vocabulary_size(str(small), "input_ids") == 300 and token_id_range(str(small), "input_ids") == (150, 300)
    feeds = make_feeds(open_session(small), small, batch=4, seq_len=9, seed=0)
    assert 150 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 300
    report = bench([small], FAST)  # a vocabulary under 2,000 benches fine
    assert report.row("small", 1, 1)["p50_ms"] > 0
    # a vocabulary of 2,048 keeps the usual range
    assert vocabulary_size(str(onnx_dir / "text.onnx"), "input_ids") == 2048
    assert token_id_range(str(onnx_dir / "text.onnx"), "input_ids") == (1000, 2000)


def test_the_looks_spend_five_percent_in_all() -> None:
    from compress.measure.bench import look_confidence

    misses = [1 - look_confidence(k) for k in range(1, 100_000)]
    assert misses[0] == pytest.approx(0.05 * 6 / math.pi**2) and misses == sorted(misses, reverse=True)
    assert 0.0499 < sum(misses) < 0.05
