"""Bundled reference models (installed as `compress.models`): `digits` and `minilm`.

Each module has `load(source) -> Model`; `digits` also has the training script and its weights.
"""
