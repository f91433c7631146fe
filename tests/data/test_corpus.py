import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compress.data.corpus import (
    MAX_WORDS,
    MIN_WORDS,
    MODULES,
    corpus,
    read_sentences,
    split_sentences,
    stdlib_sentences,
)
from compress.errors import UsageError

DIGEST_SCRIPT = (
    "import hashlib; from compress.data.corpus import corpus; "
    "print(hashlib.sha256('\\n'.join(corpus('heldout')).encode()).hexdigest())"
)


def heldout_digest_in_a_fresh_process(hash_seed: str, first: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", first + DIGEST_SCRIPT],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent,
    )
    return result.stdout.strip()


def test_stdlib_sentences_are_many_unique_and_of_bounded_length():
    sentences = stdlib_sentences()
    assert len(MODULES) >= 70
    assert len(sentences) >= 600
    assert len(set(sentences)) == len(sentences)
    word_counts = [len(s.split()) for s in sentences]
    assert min(word_counts) >= MIN_WORDS and max(word_counts) <= MAX_WORDS


def test_stdlib_sentences_read_as_prose_not_code():
    for sentence in stdlib_sentences():
        assert sentence[0].isupper() and sentence[-1] in ".!?", sentence
        assert not re.search(r">>>|==|->|[{}\[\]`]", sentence), sentence
        assert sentence == " ".join(sentence.split()), sentence


def test_stdlib_sentences_come_from_modules_classes_and_methods():
    sentences = set(stdlib_sentences())
    assert "Create a new ordered dictionary with keys from iterable and values set to value." in sentences  # OrderedDict.fromkeys
    assert "Metaclass for defining Abstract Base Classes (ABCs)." in sentences  # abc.ABCMeta


def test_corpus_is_the_same_in_fresh_processes_whatever_else_they_loaded():
    here = hashlib.sha256("\n".join(corpus("heldout")).encode()).hexdigest()
    assert heldout_digest_in_a_fresh_process("1") == here
    # transformers patches logging.Logger with methods of its own; they must not join the corpus.
    assert heldout_digest_in_a_fresh_process("2", first="import transformers.utils.logging; ") == here


def test_split_is_disjoint_complete_in_order_and_about_a_quarter_heldout():
    sentences = stdlib_sentences()
    train, heldout = split_sentences(sentences)
    assert not set(train) & set(heldout)
    assert sorted(train + heldout) == sorted(sentences)
    assert train == [s for s in sentences if s in set(train)]
    assert 0.20 <= len(heldout) / len(sentences) <= 0.30
    assert corpus("train") == train and corpus("heldout") == heldout and corpus("all") == sentences


def test_split_assigns_each_sentence_by_its_own_text():
    sentences = stdlib_sentences()
    train_all, heldout_all = split_sentences(sentences)
    train_half, heldout_half = split_sentences(sentences[::2])
    assert set(heldout_half) == set(heldout_all) & set(sentences[::2])
    assert set(train_half) == set(train_all) & set(sentences[::2])


def test_heldout_fraction_moves_the_sizes():
    sentences = stdlib_sentences()
    _, small = split_sentences(sentences, heldout_fraction=0.1)
    _, large = split_sentences(sentences, heldout_fraction=0.5)
    assert set(small) < set(large)
    assert 0.05 <= len(small) / len(sentences) <= 0.15 and 0.45 <= len(large) / len(sentences) <= 0.55


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_heldout_fraction_outside_zero_one_is_a_usage_error(fraction):
    with pytest.raises(UsageError, match="heldout fraction"):
        split_sentences(["One short sentence for the test here."], heldout_fraction=fraction)


def test_unknown_corpus_part_is_a_usage_error():
    with pytest.raises(UsageError, match="'train', 'heldout' or 'all'"):
        corpus("test")  # type: ignore[arg-type]


def test_read_sentences_strips_and_skips_blank_lines(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\ufeffThe first sentence.\n\n   \n  The second one, indented.  \r\nLast\n", encoding="utf-8")
    assert read_sentences(path) == ["The first sentence.", "The second one, indented.", "Last"]


def test_read_sentences_of_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(UsageError, match="nope.txt.*not found.*one sentence per line"):
        read_sentences(missing)


def test_read_sentences_of_a_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot be read"):
        read_sentences(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_read_sentences_of_an_empty_file_says_so(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="empty.txt.*holds no sentences"):
        read_sentences(path)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"caf\xe9 au lait\n"])
def test_read_sentences_of_a_binary_or_non_utf8_file_says_so(tmp_path, content):
    path = tmp_path / "image.png"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="image.png.*not UTF-8 text"):
        read_sentences(path)
