"""What the benchmark scripts share: finding the shared speech data, or stopping with a clear message."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tiny_audio.data import shared_data_dir


def add_sweep_options(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every dev-set decoding sweep takes: where the data is, the batch size, and where its runs
    (runs/NAME) and its JSON (benchmarks/results/NAME.json, with - as _) go."""
    parser.add_argument("--data", type=Path, help="The shared data folder (default ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output-dir", type=Path, default=Path("runs") / name)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results") / f"{name.replace('-', '_')}.json")


def wer_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a decoding sweep compares from a `run_evaluation` result: WER (%) overall and by source, its
    parts, and RTFx."""
    return {
        "wer": round(100 * result["wer"], 2),
        "by_source": {source: round(100 * r["wer"], 2) for source, r in sorted(result["by_source"].items())},
        "substitutions": result["substitutions"],
        "deletions": result["deletions"],
        "insertions": result["insertions"],
        "rtfx": round(result["rtfx"], 2),
    }


def shared_data(given: Path | None, part: str = "dev") -> Path:
    """The shared data folder (--data, else TINY_AUDIO_DATA or ../shared/data) holding `part`/manifest.jsonl; exits
    with a one-line message when it is missing, since a benchmark without its data has nothing to measure."""
    folder = given or shared_data_dir()
    if folder is None or not (folder / part / "manifest.jsonl").is_file():
        sys.exit(f"shared speech data not found: give --data or set TINY_AUDIO_DATA (expected ../shared/data/{part})")
    return folder
