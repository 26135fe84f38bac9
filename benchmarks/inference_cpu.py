"""CPU inference speed, side by side in one run: the Tiny Audio default model against faster-whisper base.

    python benchmarks/inference_cpu.py --clips 48 --precision float32 bfloat16 int8

The same dev clips (spread over LibriSpeech, AN4 and LJ Speech) go through each system one at a time and in
batches of `--batch-size`: Tiny Audio at each `--precision` (float32 as trained, bfloat16, int8 dynamic
quantization) and faster-whisper base (CTranslate2 int8 and float32; batched = one CTranslate2 batch of padded
30 s windows, as its BatchedInferencePipeline does). Each system is warmed up on two clips first. RTFx = audio
seconds / wall seconds; WER (same normalizer as `tiny-audio eval`) shows that speed was not bought with accuracy.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.data import load_rows
from tiny_audio.evaluate import word_error_rate
from tiny_audio.model import PRECISIONS
from tiny_audio.peers import FasterWhisperRecognizer, TinyAudioRecognizer

RATE = 16000


def clips(data: Path | None, count: int) -> tuple[list, list[str]]:
    folder = shared_data(data)
    rows, _ = load_rows(folder / "dev")
    rows = rows[:: max(len(rows) // count, 1)][:count]
    return [load_audio(r["audio"]) for r in rows], [r["text"] for r in rows]


def timed(fn, arrays: list, batch: int) -> tuple[float, list[str]]:
    fn(arrays[:2])  # warm-up: first-call allocations, lazy initialisation
    start, texts = time.perf_counter(), []
    for i in range(0, len(arrays), batch):
        texts += fn(arrays[i : i + batch])
    return time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="Tiny Audio model (default: the built-in one)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--num-beams",
        type=int,
        help="beam width of the Tiny Audio model (default: its own; the README figures: 1, greedy)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["float32", "bfloat16"],
        help="Tiny Audio precisions to run (CPU)",
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/inference_cpu.json"))
    args = parser.parse_args()
    arrays, refs = clips(args.data, args.clips)
    audio_s = sum(len(a) for a in arrays) / RATE

    beams = {"num_beams": args.num_beams} if args.num_beams else {}
    systems = [
        (f"tiny-audio {args.model} {p}", TinyAudioRecognizer(args.model, precision=p, **beams)) for p in args.precision
    ]
    for compute in ("int8", "float32"):
        systems.append((f"faster-whisper base {compute}", FasterWhisperRecognizer("base", compute)))
    rows = []
    for name, system in systems:
        batched = getattr(system, "transcribe_batched", system.transcribe)
        for label, fn, batch in (("1", system.transcribe, 1), (str(args.batch_size), batched, args.batch_size)):
            seconds, texts = timed(fn, arrays, batch)
            wer = word_error_rate(refs, texts)["wer"]
            rows.append({"system": name, "batch": label, "seconds": round(seconds, 2),
                         "rtfx": round(audio_s / seconds, 2), "wer": round(100 * wer, 2)})  # fmt: skip
            print(f"{name} batch {label}: RTFx {audio_s / seconds:.2f}, WER {100 * wer:.2f}", file=sys.stderr)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"\nCPU inference on {len(arrays)} dev clips ({audio_s / 60:.1f} min of audio); {machine}")
    print(f"{'system':<34}{'batch':>6}{'seconds':>9}{'RTFx':>8}{'WER %':>8}")
    for r in rows:
        print(f"{r['system']:<34}{r['batch']:>6}{r['seconds']:>9}{r['rtfx']:>8}{r['wer']:>8}")
    # Batched, each precision against faster-whisper's fastest mode; the WER column shows what each one costs.
    peer = max(r["rtfx"] for r in rows if r["system"] == "faster-whisper base int8")
    ratios = {}
    for p in args.precision:
        ours = max(r["rtfx"] for r in rows if r["system"] == f"tiny-audio {args.model} {p}" and r["batch"] != "1")
        ratios[p] = round(ours / peer, 2)
        print(f"Tiny Audio {p} batched / faster-whisper base int8 batched: x{ours / peer:.2f} (target >= 1)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "machine": machine, "clips": len(arrays), "audio_s": round(audio_s, 1),
              "rows": rows, "batched_ratio_vs_fw_int8": ratios}  # fmt: skip
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
