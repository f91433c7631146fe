from __future__ import annotations

import os

import pytest

from compress.threads import apply_torch_threads, default_torch_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The CLI's setting, applied the same way: torch's default threads run the tests 2x slower on a
# shared 2-core machine.
apply_torch_threads(default_torch_threads())


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache folder (synthetic sets), never the user's ~/.cache."""
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
