"""English sentences from outside the project: the docstrings of Python's standard library, split
into sentences, one per line, for `--data text:FILE` (a corpus that is neither text:train nor
text:heldout, to check that a figure holds on text the tool was not tuned on).

The same Python version gives the same file: docstrings of the stdlib's own `.py` files (not
site-packages), sentences of 40-200 characters that are mostly letters, no code or doctest lines,
deduplicated, then `--count` of them chosen by a hash of their text.

Usage: .venv/bin/python benchmarks/stdlib_sentences.py OUT.txt [--count 600]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sysconfig
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstrings(root: Path):
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        yield from file_docstrings(path)


def file_docstrings(path: Path):
    """The module, class and function docstrings of one .py file (none if it does not parse)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text:
                yield text


def sentences(text: str):
    for paragraph in text.split("\n\n"):
        lines = [line.strip() for line in paragraph.splitlines()]
        if any(line.startswith((">>>", "...", "$", "-", "*", "|")) or line.endswith(":") for line in lines):
            continue
        for sentence in SENTENCE_END.split(" ".join(lines)):
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if 40 <= len(sentence) <= 200 and letters >= 0.9 * len(sentence) and sentence[0].isupper() and sentence.endswith("."):
                yield sentence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=600)
    args = parser.parse_args()
    found = {s for text in docstrings(Path(sysconfig.get_paths()["stdlib"])) for s in sentences(text)}
    chosen = sorted(found, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[: args.count]
    args.out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"{len(chosen)} of {len(found)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
