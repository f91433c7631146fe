"""A broad distillation corpus from outside the project: English sentences from the docstrings of the
installed third-party packages (numpy, scipy, scikit-learn, sympy, matplotlib, networkx, torch,
transformers, ...) and, with `--man N`, N more from the English manual pages in /usr/share/man
(a second register: command and system documentation), one per line, for
`distill --data text:FILE`.

text:train (about 1,660 stdlib sentences) is too narrow to distil a pruned MiniLM that holds on other
text: the student learns the teacher on that one register. This file is some 20,000 other sentences,
from the virtual environment's site-packages only (the standard library is text:train / text:heldout
and benchmarks/stdlib_sentences.py; /usr/share/doc is left out because its copyright files hold the
licence texts of benchmarks/license_sentences.py). Sentences that occur in text:heldout are dropped, so
the held-out figure stays held out.

The same environment gives the same file: sentences chosen as stdlib_sentences.py does (40-200
characters, mostly letters, no code or doctest lines), deduplicated, then `--count` of them by a hash
of their text.

Usage: .venv/bin/python benchmarks/site_sentences.py OUT.txt [--count 20000]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sysconfig
from pathlib import Path

from stdlib_sentences import file_docstrings, sentences  # same directory: the same sentence rules

from compress.data.corpus import corpus


def package_roots(site: Path):
    """Each top-level package folder in site-packages, tests and the project itself left out."""
    for path in sorted(site.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists() and path.name not in {"compress", "tests"}:
            yield path


def package_docstrings(root: Path):
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in {"tests", "test", "testing"} or part.startswith("test_") for part in parts):
            continue
        yield from file_docstrings(path)


# roff: requests and comments (lines starting with . or '), font and character escapes.
ROFF_REQUEST = re.compile(r"^['.]")
ROFF_ESCAPE = re.compile(r"\\f[BIRP]|\\f\(..|\\f\[[^]]*\]|\\[,/&]|\\\(..|\\\*.|\\s[-+]?\d")


def man_paragraphs(root: Path):
    """The prose paragraphs of the English manual pages (man1-man8, not the translated folders)."""
    for path in sorted(root.glob("man[1-8]/*.gz")):
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        paragraph: list[str] = []
        for line in text.splitlines() + [".PP"]:
            if ROFF_REQUEST.match(line):
                if paragraph:
                    yield "\n".join(paragraph)
                paragraph = []
            else:
                paragraph.append(ROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--man", type=int, default=0, help="add this many manual-page sentences")
    args = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    heldout = set(corpus("heldout"))
    found: set[str] = set()
    for root in package_roots(site):
        for text in package_docstrings(root):
            found.update(s for s in sentences(text) if s not in heldout)
    chosen = sorted(found, key=_order)[: args.count]
    print(f"{len(chosen)} of {len(found)} sentences from {site}")
    if args.man:
        manual = {s for text in man_paragraphs(Path("/usr/share/man")) for s in sentences(text)} - heldout - found
        chosen += sorted(manual, key=_order)[: args.man]
        print(f"{min(args.man, len(manual))} of {len(manual)} sentences from /usr/share/man")
    args.out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"{len(chosen)} sentences -> {args.out}")


def _order(sentence: str) -> str:
    return hashlib.sha256(sentence.encode()).hexdigest()


if __name__ == "__main__":
    main()
