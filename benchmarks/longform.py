"""Long audio: WER of each long recording transcribed whole against the same audio transcribed piece by piece.

    python benchmarks/longform.py                                  # the built-in default model
    python benchmarks/longform.py --model faster-whisper:base      # any `tiny-audio eval` model spec

For every recording in ../shared/data/longform (or --data), the whole file goes through the windowing of
tiny_audio.transcribe (30 s windows cut in pauses, and overlapping 30 s windows with a 5 s stride reconciled
word by word), and separately each of its pieces (the manifest's `segments`: the original utterances) is
transcribed on its own. Both transcripts are scored against the full reference with the evaluation's
normalizer and WER. The goal: whole within 1 point (absolute) of piece by piece, so windowing costs nothing.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.evaluate import word_error_rate
from tiny_audio.peers import load_recognizer
from tiny_audio.transcribe import transcribe_windows

RATE = 16000


def pieces_of(row: dict) -> list[dict]:
    segments = row["segments"]
    return ast.literal_eval(segments) if isinstance(segments, str) else segments  # stored as a Python literal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="Tiny Audio folder, hub id, 'default', or a peer spec")
    parser.add_argument("--data", type=Path, help="shared data folder (default ../shared/data or TINY_AUDIO_DATA)")
    parser.add_argument("--chunk-length-s", type=float, default=30.0)
    parser.add_argument("--stride-length-s", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--num-beams",
        type=int,
        help="beam width of the Tiny Audio model (default: its own; the README figures: 1, greedy)",
    )
    parser.add_argument("--ctc-head-weight", type=float, help="ctc_head_weight (default: the model's own)")
    parser.add_argument(
        "--lexicon-penalty", type=float, help="ctc_lexicon_penalty, 0 turns the lexicon off (default: the model's own)"
    )
    parser.add_argument(
        "--lm-rescore-weight", type=float, help="lm_rescore_weight, 0 turns rescoring off (default: the model's own)"
    )
    parser.add_argument(
        "--ctc-rescore-weight",
        type=float,
        help="ctc_rescore_weight, the CTC head's weight in rescoring (default: the model's own)",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/longform.json"))
    parser.add_argument("--no-stride", action="store_true", help="skip the overlapping-windows run (slow on CPU)")
    args = parser.parse_args()
    manifest = shared_data(args.data, "longform") / "longform" / "manifest.jsonl"
    recognizer = load_recognizer(
        args.model,
        num_beams=args.num_beams,
        ctc_head_weight=args.ctc_head_weight,
        lexicon_penalty=args.lexicon_penalty,
        lm_rescore_weight=args.lm_rescore_weight,
        ctc_rescore_weight=args.ctc_rescore_weight,
    )
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    report = []
    for row in rows:
        audio = load_audio(str(manifest.parent / row["audio"]))
        parts = [audio[int(p["start"] * RATE) : int(p["end"] * RATE)] for p in pieces_of(row)]
        runs = {}
        modes = [("whole, cut in pauses", "silence"), ("whole, 5 s overlaps", "stride"), ("pieces", None)]
        for label, segment in [m for m in modes if not (args.no_stride and m[1] == "stride")]:
            start = time.perf_counter()
            if segment is None:
                results = transcribe_windows(
                    recognizer.transcribe, parts, RATE, batch_size=args.batch_size, chunk_length_s=args.chunk_length_s
                )
            else:
                results = transcribe_windows(
                    recognizer.transcribe, [audio], RATE, batch_size=args.batch_size,
                    chunk_length_s=args.chunk_length_s, stride_length_s=args.stride_length_s, segment=segment,
                )  # fmt: skip
            text = " ".join(r.text for r in results if r.text)
            score = word_error_rate([row["text"]], [text])
            runs[label] = {
                "wer": round(100 * score["wer"], 2),
                "substitutions": score["substitutions"],
                "deletions": score["deletions"],
                "insertions": score["insertions"],
                "seconds": round(time.perf_counter() - start, 1),
                "text": text,
            }
        report.append({"id": row["id"], "duration": row["duration"], "pieces": len(parts), "runs": runs})
        print(f"{row['id']}: " + ", ".join(f"{k} {v['wer']:.2f}" for k, v in runs.items()), file=sys.stderr)

    labels = list(report[0]["runs"])
    print(f"\nLong-form WER (%) of {args.model}: whole recordings against the same audio piece by piece")
    print(f"{'recording':<36}{'min':>6}" + "".join(f"{label:>24}" for label in labels))
    for r in report:
        print(f"{r['id']:<36}{r['duration'] / 60:>6.1f}" + "".join(f"{r['runs'][k]['wer']:>24.2f}" for k in labels))
    totals = {}
    for label in labels:
        errors = sum(r["runs"][label][k] for r in report for k in ("substitutions", "deletions", "insertions"))
        words = sum(
            word_error_rate([row["text"]], [""])["words"] for row in rows
        )  # reference words, the same for every run
        totals[label] = round(100 * errors / words, 2)
    print(
        f"{'all (corpus WER)':<36}{sum(r['duration'] for r in report) / 60:>6.1f}"
        + "".join(f"{totals[k]:>24.2f}" for k in labels)
    )
    gaps = {k: round(totals[k] - totals["pieces"], 2) for k in labels if k != "pieces"}
    print("whole minus pieces: " + ", ".join(f"{k} {v:+.2f}" for k, v in gaps.items()) + " (goal: at most +1.00)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out = {"command": " ".join(sys.argv), "model": args.model, "corpus_wer": totals, "gap": gaps, "recordings": report}
    args.output.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
