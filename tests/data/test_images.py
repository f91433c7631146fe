"""`images:DIR` for eval and run: class subfolders -> labels (by the model's label names when it
has them), flat folders -> no labels, the model's image-processor config when it has one, else its
example size in [0, 1]; every mismatch is exit 2 naming both shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from compress.cli.main import cli
from compress.data.specs import load_data
from compress.loading.checkpoint import load
from cli_checks import one_line_error


def _image(path, size=(20, 14), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    array = (rng.random((size[1], size[0], channels)) * 255).astype(np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(path)


@pytest.fixture
def classes(tmp_path):
    for i, name in enumerate(["cat", "dog", "cat", "eel", "dog"]):
        _image(tmp_path / "imgs" / name / f"{i}.png", size=(10 + i, 12), seed=i, mode="L" if i == 2 else "RGB")
    return tmp_path / "imgs"


def test_class_subfolders_give_labels_in_sorted_order_at_the_models_size(classes):
    data = load_data(f"images:{classes}", load("tiny_models:cnn"))
    assert data.inputs[0].shape == (5, 1, 8, 8) and data.inputs[0].dtype == torch.float32
    assert 0 <= data.inputs[0].min() and data.inputs[0].max() <= 1
    assert data.labels.tolist() == [0, 0, 1, 1, 2]  # cat, cat, dog, dog, eel


def test_eval_and_run_on_an_image_folder(runner, classes, tmp_path):
    result = runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"images:{classes}", "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["samples"] == 5 and "accuracy" in figures
    run = runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--data", f"images:{classes}", "--out", str(tmp_path / "x"), "--json", "export"])
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["quality_metric"] == "accuracy"


def test_a_flat_folder_has_no_labels(runner, tmp_path):
    for i in range(3):
        _image(tmp_path / "flat" / f"{i}.jpg", seed=i)
    data = load_data(f"images:{tmp_path / 'flat'}", load("tiny_models:cnn"))
    assert data.labels is None and len(data) == 3
    result = runner.invoke(cli, ["eval", "tiny_models:cnn", "--data", f"images:{tmp_path / 'flat'}", "--reference", "tiny_models:cnn", "--json"])
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert "accuracy" not in figures and figures["agreement"] == 1.0


def _vit(tmp_path, processor_size: int | None):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, num_labels=3, id2label={0: "eel", 1: "dog", 2: "cat"}, label2id={"eel": 0, "dog": 1, "cat": 2})
    folder = tmp_path / f"vit{processor_size}"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    if processor_size:
        transformers.ViTImageProcessor(size={"height": processor_size, "width": processor_size}, image_mean=[0.5, 0.4, 0.3],
                                       image_std=[0.2, 0.2, 0.2]).save_pretrained(folder)
    return folder


def test_a_hugging_face_model_uses_its_image_processor_and_label_names(classes, tmp_path):
    folder = _vit(tmp_path, 16)
    data = load_data(f"images:{classes}", load(str(folder)))
    processor = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil")
    images = [Image.open(p).convert("RGB") for p in sorted(classes.rglob("*.png"))]
    torch.testing.assert_close(data.inputs[0], processor(images=images, return_tensors="pt")["pixel_values"])
    assert data.labels.tolist() == [2, 2, 1, 1, 0]  # cat, dog, eel by the model's label2id
    assert data.inputs[0].min() < 0  # normalised with the processor's mean and std, not [0, 1]


def test_without_an_image_processor_images_take_the_example_size(classes, tmp_path):
    data = load_data(f"images:{classes}", load(str(_vit(tmp_path, None))))
    assert data.inputs[0].shape == (5, 3, 16, 16) and 0 <= data.inputs[0].min() and data.inputs[0].max() <= 1


@pytest.mark.parametrize("case, needles", [
    ("processor_size", ["has pixel_values [5, 3, 32, 32]", "takes pixel_values [1, 3, 16, 16]"]),
    ("text_model", ["gives images [N, C, H, W] but", "takes [1, 16], [1, 16]"]),
    ("mixed", ["mixes images (stray.png) with class subfolders (cat)"]),
    ("empty", ["no images"]),
    ("corrupt", ["broken.png is not a readable image"]),
    ("onnx_only", ["images are sized and scaled for a model"]),
])
def test_images_that_do_not_fit_exit_2_naming_both(runner, classes, tmp_path, case, needles):
    model = "tiny_models:cnn"
    if case == "processor_size":
        model = str(_vit(tmp_path, 32))  # the processor resizes to 32, the model takes 16
    elif case == "text_model":
        torch.manual_seed(0)
        transformers.BertModel(transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=32)).save_pretrained(tmp_path / "bert")
        model = str(tmp_path / "bert")
    elif case == "mixed":
        _image(classes / "stray.png")
    elif case == "empty":
        classes = tmp_path / "nothing"
        classes.mkdir()
    elif case == "corrupt":
        (classes / "cat" / "broken.png").write_bytes(b"not an image")
    elif case == "onnx_only":
        assert runner.invoke(cli, ["run", "--model", "tiny_models:cnn", "--out", str(tmp_path / "x"), "export"]).exit_code == 0
        model = str(tmp_path / "x" / "model.onnx")
    args = ["eval", model, "--data", f"images:{classes}"] + (["--seq-len", "16"] if case == "text_model" else [])
    one_line_error(runner.invoke(cli, args), 2, "data: images:", *needles)


def test_a_model_without_image_size_takes_its_processors_size(runner, classes, tmp_path):
    """ResNet's config has no image_size: the example input (and so the exported graph) takes the
    size its processor gives (shortest edge 40, centre crop), so a run on the image folder exports."""
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    transformers.ResNetForImageClassification(config).save_pretrained(tmp_path / "resnet")
    transformers.ConvNextImageProcessor(size={"shortest_edge": 40}, crop_pct=0.875).save_pretrained(tmp_path / "resnet")
    model = load(str(tmp_path / "resnet"))
    assert model.example_inputs[0].shape == (1, 3, 40, 40)
    assert load_data(f"images:{classes}", model).inputs[0].shape == (5, 3, 40, 40)
    result = runner.invoke(cli, ["run", "--model", str(tmp_path / "resnet"), "--data", f"images:{classes}", "--out", str(tmp_path / "x"), "--json", "export"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["quality_metric"] == "accuracy"


def test_a_saved_model_keeps_its_image_processor(classes, tmp_path):
    import shutil

    from compress.model import save

    folder = _vit(tmp_path, 16)
    model = load(str(folder))
    expected = load_data(f"images:{classes}", model)
    save(model, tmp_path / "saved")
    shutil.rmtree(folder)
    again = load_data(f"images:{classes}", load(str(tmp_path / "saved")))
    torch.testing.assert_close(again.inputs[0], expected.inputs[0])
    assert again.labels.tolist() == expected.labels.tolist()  # label names from the copied config
