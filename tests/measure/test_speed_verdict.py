"""A paired latency ratio's interval in words: slower is said plainly."""

from __future__ import annotations

import pytest

from compress.measure.settings import speed_verdict


@pytest.mark.parametrize("low, high, words", [
    (1.6, 3.8, "SLOWER than the original"),
    (0.54, 0.61, "faster than the original"),
    (0.94, 1.05, "no clear difference from the original"),
])
def test_the_interval_decides_the_words(low, high, words):
    assert speed_verdict(low, high) == words
