"""Error analysis of evaluation runs (the utterances.jsonl that `tiny-audio eval` writes).

tiny-audio analysis high-wer eval/dev/my-model --threshold 30
tiny-audio analysis compare eval/dev/faster-whisper-base eval/dev/my-model
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jiwer

from .evaluate import normalize_text


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Scored per-utterance records of a run folder, its results.json or its utterances.jsonl."""
    path = Path(path)
    if path.is_dir() or path.name == "results.json":
        path = (path if path.is_dir() else path.parent) / "utterances.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (give an eval run folder, results.json or utterances.jsonl)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if "error" not in r]


def utterance_wer(record: dict[str, Any]) -> float:
    """WER of one utterance after normalization (an empty reference counts hypothesis words as errors)."""
    ref, hyp = normalize_text(record["reference"]), normalize_text(record["hypothesis"])
    if not ref:
        return float(len(hyp.split()))
    return jiwer.wer(ref, hyp or "")


def high_wer(path: str | Path, threshold: float = 30.0) -> list[dict[str, Any]]:
    """Utterances whose WER (in %) is above the threshold, worst first."""
    rows = [{**r, "wer": 100 * utterance_wer(r)} for r in read_records(path)]
    return sorted((r for r in rows if r["wer"] > threshold), key=lambda r: -r["wer"])


def error_counts(records: list[dict[str, Any]]) -> dict[str, Counter]:
    """Most frequent substitutions (ref -> hyp), insertions and deletions over normalized texts."""
    counts = {"substitutions": Counter(), "insertions": Counter(), "deletions": Counter()}
    for r in records:
        ref, hyp = normalize_text(r["reference"]), normalize_text(r["hypothesis"])
        if not ref or not hyp:
            counts["deletions" if ref else "insertions"].update((ref or hyp).split())
            continue
        out = jiwer.process_words(ref, hyp)
        ref_words, hyp_words = out.references[0], out.hypotheses[0]
        for chunk in out.alignments[0]:
            if chunk.type == "substitute":
                for a, b in zip(ref_words[chunk.ref_start_idx : chunk.ref_end_idx],
                                hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx], strict=False):  # fmt: skip
                    counts["substitutions"][f"{a} -> {b}"] += 1
            elif chunk.type == "delete":
                counts["deletions"].update(ref_words[chunk.ref_start_idx : chunk.ref_end_idx])
            elif chunk.type == "insert":
                counts["insertions"].update(hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx])
    return counts


def compare(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Utterances B wins, loses and ties against A (per-utterance WER), and each side's frequent errors."""
    ra = {r["id"]: r for r in read_records(a)}
    rb = {r["id"]: r for r in read_records(b)}
    common = sorted(set(ra) & set(rb))
    if not common:
        raise ValueError("the two runs share no utterance ids")
    won, lost, tied = [], [], []
    for uid in common:
        wa, wb = utterance_wer(ra[uid]), utterance_wer(rb[uid])
        (won if wb < wa else lost if wb > wa else tied).append({"id": uid, "wer_a": wa, "wer_b": wb, **rb[uid]})
    return {
        "common": len(common),
        "won": sorted(won, key=lambda r: r["wer_b"] - r["wer_a"]),
        "lost": sorted(lost, key=lambda r: r["wer_a"] - r["wer_b"]),
        "tied": len(tied),
        "errors_a": error_counts([ra[u] for u in common]),
        "errors_b": error_counts([rb[u] for u in common]),
    }
