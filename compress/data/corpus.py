"""Real English text for the text models, built at run time from the standard library's docstrings.

No data set is downloaded or shipped: the docstrings of a fixed list of stdlib modules and of their
public classes, functions and methods are split into sentences, in a fixed order, keeping those of
6 to 40 words that read as prose (doctest and code lines dropped). On one Python version the list is
the same on every run and machine; another Python version has slightly different docstrings.

Each sentence goes to the held-out part or the train part by a hash of its own text, so the split
never depends on its neighbours: a sentence added or removed elsewhere moves no other sentence.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from compress.errors import UsageError

Part = Literal["train", "heldout", "all"]

MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmath",
    "codecs", "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fnmatch",
    "fractions", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser",
    "http.client", "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma",
    "mimetypes", "operator", "os", "pathlib", "pickle", "pprint", "queue", "random", "re",
    "secrets", "shlex", "shutil", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "typing", "unittest",
    "urllib.parse", "uuid", "warnings", "zipfile", "zlib",
)
MIN_WORDS, MAX_WORDS = 6, 40
HELDOUT_FRACTION = 0.25

# A sentence ends at . ! or ? followed by space and a capital letter, so "e.g. the" stays whole
# (and "e.g. Windows" too).
SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z])")
# Lines that are code, not prose: doctest prompts, reST directives, tables and rules, signatures.
CODE_LINE = re.compile(r"^(>>>|\.\.\.|\.\. |[-=~*+]{3,}|[|+]|[A-Za-z_][\w.]*\(.*\)\s*(->.*)?$)")
# Marks of code or markup inside a sentence; prose from docstrings rarely needs any of them.
CODE_MARKS = re.compile(r"[{}\[\]<>\\`|@#$]|==|->|::|\w\(|\w_\w|^\W")
# A word is prose if it is letters, optionally with an apostrophe, hyphen or trailing punctuation.
PROSE_WORD = re.compile(r"^[(\"']?[A-Za-z][A-Za-z'-]*[.,;:!?\"')]*$")
MIN_PROSE_SHARE = 0.85


def stdlib_sentences() -> list[str]:
    """Unique prose sentences of 6 to 40 words from the stdlib docstrings of `MODULES`, in a fixed
    order (module by module, source order). Python 3.11.7 gives 2,215."""
    return list(_stdlib_sentences())


@functools.lru_cache(maxsize=1)
def _stdlib_sentences() -> tuple[str, ...]:
    seen: dict[str, None] = {}  # a dict keeps first-seen order; a set would not
    for docstring in _docstrings():
        for sentence in _prose_sentences(docstring):
            seen.setdefault(sentence, None)
    return tuple(seen)


def split_sentences(
    sentences: Sequence[str], heldout_fraction: float = HELDOUT_FRACTION
) -> tuple[list[str], list[str]]:
    """(train, heldout): disjoint, each in the input's order with repeats kept once; a sentence's
    part depends only on its text (SHA-256), so adding sentences never moves the others."""
    if not 0.0 < heldout_fraction < 1.0:
        raise UsageError("heldout fraction", heldout_fraction, "use a number between 0 and 1, e.g. 0.25")
    train: list[str] = []
    heldout: list[str] = []
    for sentence in dict.fromkeys(sentences):
        (heldout if _unit_hash(sentence) < heldout_fraction else train).append(sentence)
    return train, heldout


def corpus(part: Part) -> list[str]:
    """The stdlib sentences of one part: 'train', 'heldout' or 'all'."""
    sentences = stdlib_sentences()
    if part == "all":
        return sentences
    if part not in ("train", "heldout"):
        raise UsageError("corpus part", part, "use 'train', 'heldout' or 'all'")
    train, heldout = split_sentences(sentences)
    return train if part == "train" else heldout


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per line of a UTF-8 text file, stripped; blank lines skipped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError("text file", path, "not found; give a UTF-8 text file with one sentence per line") from exc
    except OSError as exc:
        raise UsageError("text file", path, f"cannot be read ({exc.strerror}); give a readable text file with one sentence per line") from exc
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"), data.index(b"\x00") + 1, "NUL byte")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError("text file", path, f"is not UTF-8 text ({exc.reason} at byte {exc.start}); give a text file with one sentence per line") from exc
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise UsageError("text file", path, "holds no sentences; write one sentence per line")
    return sentences


def _unit_hash(sentence: str) -> float:
    """A number in [0, 1) fixed by the sentence's text (Python's hash() changes between runs)."""
    digest = hashlib.sha256(sentence.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _docstrings() -> Iterator[str]:
    """Docstrings read from each module's source with `ast`, in source order, so nothing another
    library patches in at run time changes the corpus (transformers adds
    `logging.Logger.warning_once`; other libraries wrap `inspect` functions). Modules written in C
    have no source and cannot be patched: their live docstrings are read, names sorted."""
    for module_name in MODULES:
        spec = importlib.util.find_spec(module_name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(".py"):
            yield from _source_docstrings(Path(origin).read_text(encoding="utf-8"))
        else:
            yield from _live_docstrings(importlib.import_module(module_name))


def _source_docstrings(source: str) -> Iterator[str]:
    tree = ast.parse(source)
    yield ast.get_docstring(tree, clean=False) or ""
    for node in _public_defs(tree.body):
        yield ast.get_docstring(node, clean=False) or ""
        if isinstance(node, ast.ClassDef):
            for method in _public_defs(node.body):
                yield ast.get_docstring(method, clean=False) or ""


def _public_defs(body: list[ast.stmt]) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node


def _live_docstrings(module: object) -> Iterator[str]:
    yield module.__doc__ or ""
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        yield obj.__doc__ or ""
        if inspect.isclass(obj):
            for method_name, method in sorted(vars(obj).items()):
                if not method_name.startswith("_") and inspect.isroutine(method):
                    yield method.__doc__ or ""


def _prose_sentences(docstring: str) -> Iterator[str]:
    for paragraph in _prose_paragraphs(inspect.cleandoc(docstring)):
        for sentence in SENTENCE_END.split(paragraph):
            sentence = " ".join(sentence.split())
            if _is_prose(sentence):
                yield sentence


def _prose_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of unindented prose lines, each joined into one line; code lines dropped."""
    lines: list[str] = []
    for line in text.splitlines() + [""]:
        if line.strip() and not line[0].isspace() and not CODE_LINE.match(line.strip()):
            lines.append(line.strip())
        elif lines:
            yield " ".join(lines)
            lines = []


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".!?" or CODE_MARKS.search(sentence):
        return False
    return sum(bool(PROSE_WORD.match(word)) for word in words) >= MIN_PROSE_SHARE * len(words)
