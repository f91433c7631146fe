"""`images:DIR`: an image folder as data. Class subfolders (`DIR/cat/1.jpg`, `DIR/dog/2.png`) give
labels, by the model's own label names when its config has them, else in sorted order; image files
directly in DIR give inputs without labels.

Preprocessing is the model's own when it has one: a Hugging Face folder's image-processor config
(`preprocessor_config.json`, read by transformers' PIL backend). Otherwise each image is converted
to the model's channel count, resized to its example input size and scaled to [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.errors import UsageError
from compress.model import Model

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# PIL modes by the number of channels the model takes.
MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def load_images(folder: Path, model: Model | None, spec: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pixel values [N, C, H, W] float32 and labels [N] int64 (None for a flat folder)."""
    if model is None:
        raise UsageError("data", spec, "images are sized and scaled for a model; give a torch model (or --reference with one)")
    files, labels = _files_and_labels(folder, spec, model)
    images = [_open(path, spec) for path in files]
    processor = _processor(model)
    pixels = _preprocess_hf(processor, images) if processor is not None else _preprocess_plain(images, model, spec)
    return pixels, labels


def _files_and_labels(folder: Path, spec: str, model: Model) -> tuple[list[Path], torch.Tensor | None]:
    if not folder.is_dir():
        raise UsageError("data", spec, f"{folder} is not a folder; give a folder of images, with one subfolder per class for labels")
    flat = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and any(_images_in(d)))
    if flat and classes:
        raise UsageError("data", spec, f"mixes images ({flat[0].name}) with class subfolders ({classes[0].name}); put every image in a class subfolder, or none")
    if flat:
        return flat, None
    if not classes:
        raise UsageError("data", spec, f"no images ({', '.join(SUFFIXES)}) in {folder} or its subfolders")
    index = _class_index([d.name for d in classes], model)
    files, labels = [], []
    for d in classes:
        for path in _images_in(d):
            files.append(path)
            labels.append(index[d.name])
    return files, torch.tensor(labels, dtype=torch.long)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def _class_index(names: list[str], model: Model) -> dict[str, int]:
    """The model's own label ids when every folder name is one of its labels (a Hugging Face
    config's label2id); otherwise the sorted order of the folders."""
    config = _hf_config(model, "config.json")
    label2id = {str(k): int(v) for k, v in (config or {}).get("label2id", {}).items()}
    if label2id and all(name in label2id for name in names):
        return {name: label2id[name] for name in names}
    return {name: i for i, name in enumerate(names)}


def _open(path: Path, spec: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError("data", spec, f"{path} is not a readable image ({exc}); remove it or replace it") from exc


def _hf_config(model: Model, name: str) -> dict | None:
    """A JSON file of the model's Hugging Face folder (its copy in a saved model), if any."""
    if model.source.kind != "hf":
        return None
    path = Path(model.source.ref) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _processor(model: Model) -> Any:
    if _hf_config(model, "preprocessor_config.json") is None:
        return None
    import transformers

    return transformers.AutoImageProcessor.from_pretrained(model.source.ref, local_files_only=True, backend="pil")


def _preprocess_hf(processor: Any, images: list[Any]) -> torch.Tensor:
    return processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"].float()


def _preprocess_plain(images: list[Any], model: Model, spec: str) -> torch.Tensor:
    from PIL import Image

    example = model.example_inputs[0]
    if len(model.example_inputs) != 1 or example.dim() != 4 or not example.is_floating_point():
        shapes = ", ".join(str(list(x.shape)) for x in model.example_inputs)
        raise UsageError("data", spec, f"gives images [N, C, H, W] but {model.name} takes {shapes}; give data of its inputs (tensors:FILE)")
    channels, height, width = example.shape[1:]
    if channels not in MODES:
        raise UsageError("data", spec, f"gives images of 1, 3 or 4 channels but {model.name} takes {list(example.shape)}; give tensors:FILE")
    arrays = [np.asarray(image.convert(MODES[channels]).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0 for image in images]
    pixels = torch.from_numpy(np.stack(arrays))
    return (pixels.unsqueeze(1) if channels == 1 else pixels.permute(0, 3, 1, 2)).contiguous()
