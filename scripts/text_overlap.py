"""Check that training text does not leak evaluation transcripts: shared word n-grams between the two.

    python scripts/text_overlap.py --train data/synth-text.txt data/synth2-text.txt data/synth3-text.txt \
        data/synth4-text.txt --eval ../shared/data/dev/manifest.jsonl ../shared/data/longform/manifest.jsonl

Synthetic training sentences are drawn from public text; were one of them a dev sentence, the model could recite
it and dev WER would flatter it. Every evaluation transcript that shares an n-gram (8 words by default, after
lower-casing and dropping punctuation) with any training line is printed; the exit status is 1 if there is one.
Training files are plain text (a sentence a line) or JSONL manifests (their "text" field).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def texts(path: Path) -> Iterator[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        yield json.loads(line).get("text", "") if path.suffix == ".jsonl" else line


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="training text or manifests")
    parser.add_argument("--eval", type=Path, nargs="+", required=True, help="evaluation manifests")
    parser.add_argument("-n", type=int, default=8, help="n-gram length in words (default 8)")
    args = parser.parse_args()
    for path in args.train + args.eval:
        if not path.is_file():
            sys.exit(f"not found: {path}")
    seen: set[tuple[str, ...]] = set()
    lines = 0
    for path in args.train:
        for text in texts(path):
            seen |= ngrams(words(text), args.n)
            lines += 1
    hits = checked = 0
    for path in args.eval:
        for text in texts(path):
            checked += 1
            shared = ngrams(words(text), args.n) & seen
            if shared:
                hits += 1
                print(f"{path}: {text[:100]!r} shares {' '.join(next(iter(shared)))!r}")
    print(f"{hits} of {checked} evaluation transcripts share a {args.n}-word sequence with {lines} training lines")
    sys.exit(1 if hits else 0)


if __name__ == "__main__":
    main()
