"""An Ogg/Opus copy of a manifest's audio, to measure what the codec costs a model.

    python scripts/opus_copy.py ../shared/data/dev/manifest.jsonl --out data/dev-opus
    tiny-audio eval --model default --data data/dev-opus/manifest.jsonl --output-dir runs/eval-opus --num-beams 1

../shared/data/train holds Ogg/Opus re-encodings (about 58 kbit/s, with container overhead) while dev is FLAC, so
a model trained there hears the codec in training but not at evaluation. Scoring the same model on dev and on
this copy of dev (same clips, same transcripts, encoded like the training audio) shows whether that mismatch costs
anything. libsndfile's Opus `compression_level` 0.8 gives about 58 kbit/s on 16 kHz speech.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="a JSONL manifest with audio paths relative to its folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for audio/*.ogg and manifest.jsonl")
    parser.add_argument("--compression-level", type=float, default=0.8, help="libsndfile's 0 (best) to 1 (smallest)")
    args = parser.parse_args()
    if not args.manifest.is_file():
        parser.error(f"{args.manifest} not found")
    (args.out / "audio").mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    with open(args.out / "manifest.jsonl", "w") as out:
        for row in rows:
            audio, rate = sf.read(args.manifest.parent / row["audio"], dtype="float32")
            target = f"audio/{Path(row['audio']).stem}.ogg"
            sf.write(
                args.out / target, audio, rate, format="OGG", subtype="OPUS", compression_level=args.compression_level
            )
            out.write(json.dumps({**row, "audio": target}) + "\n")
    print(f"{len(rows)} clips -> {args.out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
