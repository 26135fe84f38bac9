"""Beam search that stops once num_beams hypotheses have ended, against one that searches on to the token limit.

    python benchmarks/beam_stop.py --clips 16            # the built-in default model, beam 4, first 16 dev clips

The same clips (the first N of ../shared/data/dev, or --data) are transcribed in batches of 8 with
`early_stopping=True` (what `ASRModel.generate` sets for beams) and with `early_stopping=False` (transformers'
default: go on while a longer hypothesis could still score better). Prints the wall time of each, how many
transcripts agree, the WER of each, the ones that differ, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.data import load_rows
from tiny_audio.evaluate import word_error_rate
from tiny_audio.model import ASRModel
from tiny_audio.transcribe import transcribe_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="Tiny Audio model (default: the built-in one)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/beam_stop.json"))
    args = parser.parse_args()
    folder = shared_data(args.data)
    rows, _ = load_rows(folder / "dev")
    rows = rows[: args.clips]
    arrays, refs = [load_audio(r["audio"]) for r in rows], [r["text"] for r in rows]
    model = ASRModel.from_pretrained(args.model).for_inference()

    report, texts = {"clips": len(rows), "audio_s": round(sum(len(a) for a in arrays) / 16000, 1)}, {}
    for stop in (True, False):
        start, out = time.perf_counter(), []
        for i in range(0, len(arrays), 8):
            batch = arrays[i : i + 8]
            out += [t.text for t in transcribe_arrays(model, batch, 8, num_beams=args.num_beams, early_stopping=stop)]
        texts[stop] = out
        report[f"early_stopping={stop}"] = {
            "wall_s": round(time.perf_counter() - start, 1),
            "wer": round(100 * word_error_rate(refs, out)["wer"], 2),
        }
        print(f"early_stopping={stop}: {report[f'early_stopping={stop}']}")
    report["same_text"] = sum(a == b for a, b in zip(texts[True], texts[False], strict=True))
    print(f"same text: {report['same_text']} of {len(rows)}")
    for a, b in zip(texts[True], texts[False], strict=True):
        if a != b:
            print(f"  stop: {a}\n  on:   {b}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
