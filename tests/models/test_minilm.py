import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from compress.data.corpus import corpus
from compress.errors import UsageError
from compress.model import Model, Source
from compress.models import minilm

# The real all-MiniLM-L6-v2 (22.7 M parameters): loading and exporting it takes seconds per test.
pytestmark = pytest.mark.slow

SEQ_LEN = 64
HIDDEN = 384


@pytest.fixture(scope="module")
def model() -> Model:
    return minilm.load(Source("bundled", "minilm", seq_len=SEQ_LEN))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    heldout = corpus("heldout")
    # Short and long ones, so padding differs a lot across the batch.
    return sorted(heldout[:40], key=len)[::5]


def test_load_gives_an_embedding_model_with_padded_example_inputs(model):
    input_ids, attention_mask = model.example_inputs
    assert (model.name, model.task, model.eval_data) == ("minilm", "embedding", "text:heldout")
    assert model.input_names == ("input_ids", "attention_mask")
    assert input_ids.shape == attention_mask.shape == (1, SEQ_LEN)
    assert input_ids.dtype == attention_mask.dtype == torch.long
    # compress.hf.EXAMPLE_SENTENCE: [CLS] + 9 word pieces + [SEP], then padding.
    assert attention_mask.sum().item() == 11 and attention_mask[0, 11:].sum().item() == 0
    assert not model.module.training
    assert sum(p.numel() for p in model.module.parameters()) == 22_713_216
    assert model.dynamic_axes["input_ids"] == {0: "batch", 1: "sequence"}


def test_embeddings_are_unit_vectors_of_size_384(model, sentences):
    embeddings = model(*minilm.tokenize(model.tokenizer, sentences, SEQ_LEN))
    assert embeddings.shape == (len(sentences), HIDDEN)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(sentences)), atol=1e-5, rtol=0)


def test_embeddings_match_mean_pooling_of_each_unpadded_sentence(model, sentences):
    # The reference: the raw AutoModel on each sentence alone, no padding, mean over all its tokens.
    raw = AutoModel.from_pretrained(str(minilm.model_dir()), local_files_only=True).eval()
    batch = model(*minilm.tokenize(model.tokenizer, sentences, SEQ_LEN))
    for sentence, embedding in zip(sentences, batch):
        tokens = model.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            mean = raw(**tokens).last_hidden_state[0].mean(dim=0)
        reference = mean / mean.norm()
        assert F.cosine_similarity(embedding, reference, dim=0).item() >= 0.9999
        torch.testing.assert_close(embedding, reference, atol=1e-5, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers not installed")
def test_embeddings_match_the_packaged_sentence_transformers_pipeline(model, sentences):
    from sentence_transformers import SentenceTransformer

    pipeline = SentenceTransformer(str(minilm.model_dir()), device="cpu", local_files_only=True)
    reference = pipeline.encode(sentences, convert_to_tensor=True)
    ours = model(*minilm.tokenize(model.tokenizer, sentences, SEQ_LEN))
    assert F.cosine_similarity(ours, reference).min().item() >= 0.9999


def test_tokenize_pads_and_truncates_to_seq_len(model):
    long_sentence = " ".join(["word"] * 100)
    input_ids, attention_mask = minilm.tokenize(model.tokenizer, ["Short one.", long_sentence], 16)
    assert input_ids.shape == (2, 16)
    assert attention_mask.sum(dim=1).tolist() == [5, 16]  # [CLS] short one . [SEP]
    assert input_ids[1, -1].item() == model.tokenizer.sep_token_id


def test_padding_length_does_not_change_the_embedding(model, sentences):
    short = model(*minilm.tokenize(model.tokenizer, sentences, SEQ_LEN))
    long = model(*minilm.tokenize(model.tokenizer, sentences, 2 * SEQ_LEN))
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seq_len", [1, 513])
def test_sequence_length_outside_the_position_table_is_a_usage_error(seq_len):
    with pytest.raises(UsageError, match="sequence length.*2 to 512"):
        minilm.load(Source("bundled", "minilm", seq_len=seq_len))


def test_a_folder_that_is_not_a_model_is_a_usage_error(tmp_path):
    from compress.loading.hf import load_hf

    with pytest.raises(UsageError, match="model folder.*cannot be read by transformers"):
        load_hf(Source("hf", str(tmp_path)))


# transformers builds the padding mask by indexing it with position ranges (never negative), which
# the exporter warns about in general.
@pytest.mark.filterwarnings("ignore:Exporting aten..index operator:UserWarning")
def test_onnx_export_runs_in_onnxruntime_like_torch(model, sentences, tmp_path):
    path = tmp_path / "minilm.onnx"
    torch.onnx.export(
        model.module, model.example_inputs, str(path), input_names=list(model.input_names),
        output_names=["output"], dynamic_axes=model.dynamic_axes, opset_version=17, dynamo=False,
    )
    assert onnx.load(str(path), load_external_data=False).opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Another batch size and length than the export's, so the dynamic axes are exercised.
    input_ids, attention_mask = minilm.tokenize(model.tokenizer, sentences, 2 * SEQ_LEN)
    (onnx_out,) = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    torch_out = model(input_ids, attention_mask).numpy()
    assert onnx_out.shape == (len(sentences), HIDDEN)
    assert np.abs(onnx_out - torch_out).max() < 1e-5
    assert F.cosine_similarity(torch.from_numpy(onnx_out), torch.from_numpy(torch_out)).min().item() >= 0.99999


def test_minilm_saved_from_a_folder_reloads_after_the_folder_is_gone(tmp_path, sentences):
    """The real MiniLM as a Hugging Face folder: saved, the folder deleted, rebuilt the same."""
    import shutil

    from compress.loading.checkpoint import load
    from compress.loading.hf import tokenize
    from compress.model import save
    from compress.models.minilm import model_dir

    folder = tmp_path / "minilm"
    shutil.copytree(model_dir(), folder)
    original = load(str(folder), seq_len=32)
    save(original, tmp_path / "saved")
    shutil.rmtree(folder)
    again = load(str(tmp_path / "saved"))
    inputs = tokenize(again.tokenizer, sentences[:4], 32)
    assert torch.equal(inputs[0], tokenize(original.tokenizer, sentences[:4], 32)[0])
    torch.testing.assert_close(again(*inputs), original(*inputs), rtol=0, atol=0)


@pytest.mark.slow
def test_trimmed_text_batches_give_the_untrimmed_embeddings_on_the_real_model():
    from compress.data.specs import load_data
    from compress.predict import in_data_order, torch_outputs

    model = minilm.load(Source("bundled", "minilm", seq_len=128))
    data = load_data("text:heldout", model).head(256)
    assert data.mask_input == 1 and data.inputs[1].float().mean() < 0.5  # mostly padding
    with torch.no_grad():
        untrimmed = in_data_order((index, model.module(*inputs)) for index, inputs in data.padded_batches(64, trim=False))
    assert (torch_outputs(model, data) - untrimmed).abs().max().item() <= 1e-6
