"""Peak memory (RSS) while transcribing one long file, Tiny Audio against faster-whisper base, side by side.

    python benchmarks/long_memory.py --minutes 15 60

Builds each file by joining dev clips (cycled, 0.5 s of silence between them) into a 16 kHz FLAC, then
transcribes it in a fresh process per system and length, and reads that process's peak RSS from the kernel
(getrusage of the finished child). Tiny Audio runs `tiny-audio transcribe FILE` (windows of the model's
`chunk_length_s`, 15 s for the default model, cut in pauses; batches of 8); faster-whisper base int8 runs its own
long-form `transcribe`. Flat in length means the peak grows by little more than the decoded audio itself (4 bytes
a sample: 230 MB an hour). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.data import load_rows

RATE = 16000
FASTER_WHISPER = """
import sys
from faster_whisper import WhisperModel
from tiny_audio.backbones import ct2_folder
model = WhisperModel(str(ct2_folder("whisper-base")), device="cpu", compute_type="int8")
segments, _ = model.transcribe(sys.argv[1], beam_size=1, language="en", condition_on_previous_text=False)
print(" ".join(s.text for s in segments)[:200])
"""


def build(path: Path, minutes: float, data: Path) -> None:
    rows, _ = load_rows(data / "dev")
    gap = np.zeros(RATE // 2, np.float32)
    target, written, i = int(minutes * 60 * RATE), 0, 0
    with sf.SoundFile(path, "w", RATE, 1, format="FLAC") as out:  # written piece by piece: this script stays small
        while written < target:
            piece = np.concatenate([load_audio(rows[i % len(rows)]["audio"]), gap])
            piece = piece[: target - written]
            out.write(piece)
            written, i = written + len(piece), i + 1


def peak_rss(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, the tail of stdout) of a child process run to completion; the peak is this
    child's own, from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(command[:4])} failed:\n{err.read()[-2000:]}")
        return usage.ru_maxrss / 1024, wall, out.read().strip()[-120:]  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[15, 60])
    parser.add_argument("--model", default=None, help="Tiny Audio model (default: the built-in one)")
    parser.add_argument("--data", type=Path)
    parser.add_argument(
        "--num-beams",
        type=int,
        help="beam width of the Tiny Audio model (default: its own; the README figures: 1, greedy)",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/long_memory.json"))
    args = parser.parse_args()
    data = shared_data(args.data)
    beams = ["--num-beams", str(args.num_beams)] if args.num_beams else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in sorted(args.minutes):
            path = Path(tmp) / f"long-{minutes:g}min.flac"
            build(path, minutes, data)
            ours = [sys.executable, "-m", "tiny_audio", "transcribe", str(path), "--batch-size", "8", *beams]
            ours += ["--model", args.model] if args.model else []
            peer = [sys.executable, "-c", FASTER_WHISPER, str(path)]
            for system, command in (("tiny-audio", ours), ("faster-whisper base int8", peer)):
                peak, wall, text = peak_rss(command)
                rows.append({"system": system, "minutes": minutes, "peak_rss_mb": round(peak), "wall_s": round(wall, 1),
                             "rtfx": round(minutes * 60 / wall, 2), "text_start": text[:80]})  # fmt: skip
                print(f"{system}, {minutes:g} min: peak {peak:.0f} MB, {wall:.0f} s", file=sys.stderr)
    print("\nPeak RSS transcribing one long file (dev clips joined), fresh process each")
    print(f"{'system':<28}{'minutes':>8}{'peak RSS MB':>13}{'wall s':>9}{'RTFx':>7}")
    for r in rows:
        print(f"{r['system']:<28}{r['minutes']:>8g}{r['peak_rss_mb']:>13}{r['wall_s']:>9}{r['rtfx']:>7}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    report = {"command": " ".join(sys.argv), "machine": machine, "rows": rows}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
