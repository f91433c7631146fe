"""English sentences from outside the project, a second corpus beside benchmarks/stdlib_sentences.py:
the licence texts every Debian system ships in /usr/share/common-licenses (GPL, LGPL, GFDL, MPL,
Apache, Artistic, CC0, BSD), split into sentences, one per line, for `--data text:FILE`. Legal prose
is far from both text:train and Python's docstrings, and its sentences are close to one another
(the GPL versions repeat each other's clauses nearly word for word), so neighbour lists are hard
to keep.

Sentences of 40-200 characters that are mostly letters (the same filter as stdlib_sentences.py),
deduplicated, then `--count` of them chosen by a hash of their text: the same files give the same set.

Usage: .venv/bin/python benchmarks/license_sentences.py OUT.txt [--count 600]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdlib_sentences import sentences  # noqa: E402  (the one sentence filter, shared)

LICENSES = Path("/usr/share/common-licenses")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=600)
    args = parser.parse_args()
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in sorted(LICENSES.iterdir()) if path.is_file()]
    found = {s for text in texts for s in sentences(text)}
    chosen = sorted(found, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[: args.count]
    args.out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"{len(chosen)} of {len(found)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
