"""Sentences for synthetic training speech, from text that installs offline from Debian.

    apt-get install fortunes bible-kjv sword-comm-tdavid diatheke
    python scripts/synth_text.py --out data/synth-text.txt --count 3000
    python scripts/synth_text.py --out data/synth2-text.txt --count 6000 --exclude data/synth-text.txt
    python scripts/synth_text.py --out data/synth3-text.txt --count 6000 --sources fortunes spurgeon \
        --exclude data/synth-text.txt --exclude data/synth2-text.txt --seed 2
    python scripts/synth_text.py --out data/synth4-text.txt --count 2400 --sources bible spurgeon \
        --exclude data/synth-text.txt --exclude data/synth2-text.txt --exclude data/synth3-text.txt --seed 4
    python scripts/synth_text.py --out data/synth5-text.txt --count 2400 --sources bible spurgeon --seed 5 \
        --exclude data/synth-text.txt --exclude data/synth2-text.txt --exclude data/synth3-text.txt \
        --exclude data/synth4-text.txt --avoid ../shared/data/dev/manifest.jsonl \
        --avoid ../shared/data/longform/manifest.jsonl

The default model's second stage adds synthetic speech (`tiny-audio data synth`) to widen its vocabulary beyond
the ~1,800 transcripts of ../shared/data/train, which it otherwise learns by heart. Sources: the fortune cookie
files (quotations, literature, humour) and the King James Bible (narrative prose, close in register to the
19th-century books LibriSpeech reads), and C. H. Spurgeon's "Treasury of David" (1869-1885; Victorian prose with a
far wider vocabulary, read through SWORD's `diatheke`). Only plain sentences are kept: 6 to 30 words, letters and
ordinary punctuation, no digits (a synthesizer's reading of "1887" need not match how a transcript writes it), no
all-capital words. The draw is seeded, so the same packages give the same file. `--avoid` leaves out sentences that
share 8 words with an evaluation set (data/synth4-text.txt, drawn without it, shares a Bible verse with 3 dev clips).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
# Fortune files with prose; the others are mostly jokes in dialogue, ASCII art or definitions.
FORTUNE_FILES = ("literature", "wisdom", "humorists", "people", "love", "men-women", "miscellaneous",
                 "politics", "education", "food", "pets", "science", "work", "platitudes", "medicine", "sports",
                 "fortunes", "pratchett")  # fmt: skip
# Narrative books of the King James Bible, as `bible` abbreviates them, with their chapter counts.
KJV_BOOKS = {"Gen": 50, "Exo": 40, "Jos": 24, "Jdg": 21, "Rut": 4, "1Sa": 31, "2Sa": 24, "1Ki": 22, "2Ki": 25,
             "Est": 10, "Mat": 28, "Mar": 16, "Luk": 24, "Joh": 21, "Act": 28}  # fmt: skip
PLAIN = re.compile(r"^[A-Za-z][A-Za-z ,.;:'!?-]*$")


def sentences(text: str) -> list[str]:
    """Split prose into sentences, joining wrapped lines."""
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def keep(sentence: str) -> bool:
    words = sentence.split()
    return (
        6 <= len(words) <= 30
        and PLAIN.match(sentence) is not None
        and "--" not in sentence
        and not any(len(w) > 1 and w.strip(",.;:'!?-").isupper() for w in words)
    )


def fortune_sentences() -> list[str]:
    found = []
    for name in FORTUNE_FILES:
        path = FORTUNES / name
        if not path.is_file():
            continue
        for entry in path.read_text(errors="replace").split("\n%\n"):
            # Drop attribution lines ("-- Mark Twain") and indented dialogue labels.
            body = "\n".join(line for line in entry.splitlines() if not line.strip().startswith("--"))
            found += sentences(body)
    return found


def bible_sentences() -> list[str]:
    if shutil.which("bible") is None:
        return []
    found = []
    for book, chapters in KJV_BOOKS.items():
        out = subprocess.run(["bible", "-f", f"{book}1:1-{chapters}:999"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            verse = re.sub(r"^\S+\d+:\d+\s+", "", line)  # the "Ge1:1 " reference
            found += [s.rstrip(":;,") + ("." if s[-1] in ":;," else "") for s in sentences(verse)]
    return found


def spurgeon_sentences() -> list[str]:
    """Spurgeon's commentary on the Psalms, without the markup SWORD keeps in it."""
    if shutil.which("diatheke") is None:
        return []
    out = subprocess.run(["diatheke", "-b", "TDavid", "-k", "Ps 1-150"], capture_output=True, text=True).stdout
    # Only the tags go: a heading ("Psalm 23 OVERVIEW") stays glued to the sentence after it, which keep() then
    # drops for its digits and capitals. (data/synth3-text.txt was drawn this way, so it stays so.)
    text = re.sub(r"<[^>]+>", " ", out)
    text = re.sub(r"^Psalms \d+:\d+:\s*", "", text, flags=re.MULTILINE)  # the "Psalms 23:1: " reference
    return sentences(text)


SOURCES = {
    "fortunes": (fortune_sentences, "fortunes"),
    "bible": (bible_sentences, "bible-kjv"),
    "spurgeon": (spurgeon_sentences, "sword-comm-tdavid diatheke"),
}


def avoid_overlap(pools: dict[str, list[str]], manifests: list[Path], n: int = 8) -> dict[str, list[str]]:
    """The pools without sentences that share an n-word sequence with the manifests' transcripts."""
    from text_overlap import ngrams, texts, words  # beside this script: the same test it runs

    evaluation = {g for path in manifests for text in texts(path) for g in ngrams(words(text), n)}
    kept = {name: [s for s in pool if not ngrams(words(s), n) & evaluation] for name, pool in pools.items()}
    for name, pool in pools.items():
        print(f"{name}: left out {len(pool) - len(kept[name])} sharing {n} words with --avoid", file=sys.stderr)
    return kept


def draw(pools: dict[str, list[str]], count: int, rng: random.Random) -> list[str]:
    """An even share of `count` from each pool; what a small pool lacks is taken from the others."""
    shuffled = {}
    for name, pool in pools.items():
        shuffled[name] = sorted(set(pool))
        rng.shuffle(shuffled[name])
    taken = {name: 0 for name in pools}
    left = count
    while left > 0:
        open_pools = [name for name in pools if taken[name] < len(shuffled[name])]
        if not open_pools:
            break
        share = max(1, left // len(open_pools))
        for name in open_pools:
            more = min(share, len(shuffled[name]) - taken[name], left)
            taken[name] += more
            left -= more
    chosen = []
    for name in pools:
        print(f"{name}: {len(shuffled[name])} plain sentences, took {taken[name]}", file=sys.stderr)
        chosen += shuffled[name][: taken[name]]
    rng.shuffle(chosen)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/synth-text.txt"))
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="a sentence file made earlier: its sentences are not drawn again (repeatable)",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        choices=sorted(SOURCES),
        default=["fortunes", "bible"],
        help="where the sentences come from, an even share each (default: fortunes bible)",
    )
    parser.add_argument(
        "--avoid",
        type=Path,
        action="append",
        default=[],
        help="an evaluation manifest: sentences sharing an 8-word sequence with its transcripts are not drawn "
        "(repeatable; the same test as scripts/text_overlap.py)",
    )
    args = parser.parse_args()
    taken = {line.strip() for path in args.exclude for line in path.read_text().splitlines()}
    pools = {name: [s for s in SOURCES[name][0]() if keep(s) and s not in taken] for name in args.sources}
    if args.avoid:
        pools = avoid_overlap(pools, args.avoid)
    missing = [SOURCES[name][1] for name, pool in pools.items() if not pool]
    if missing:
        sys.exit(f"no text found for {', '.join(n for n, p in pools.items() if not p)}: "
                 f"apt-get install {' '.join(missing)} (Debian/Ubuntu)")  # fmt: skip
    chosen = draw(pools, args.count, random.Random(args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences to {args.out}")


if __name__ == "__main__":
    main()
