"""Versions of compress and the libraries it runs on, read from package metadata so that asking
for them (`compress --version`, the report header) imports none of those libraries."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("compress", "torch", "onnx", "onnxruntime", "transformers")


def versions() -> dict[str, str]:
    found = {name: _version(name) for name in PACKAGES}
    return {**found, "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine()}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
