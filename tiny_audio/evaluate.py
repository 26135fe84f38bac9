"""Evaluation: word error rate after Whisper's English text normalizer (reference and hypothesis alike), and
resumable evaluation runs that write per-utterance JSONL and results.json.

The normalizer is whisper-normalizer's port of openai/whisper's EnglishTextNormalizer (pinned in pyproject):
lower case, fillers and bracketed tags dropped, spellings and numbers standardised.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from .audio import AudioError


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normalization, whitespace collapsed."""
    return " ".join(_normalizer()(text).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER (and its parts) over normalized texts; utterances whose reference normalizes to nothing count
    their hypothesis words as insertions."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    subs = dels = ins = hits = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_n, hyp_n = normalize_text(ref), normalize_text(hyp)
        if not ref_n:
            ins += len(hyp_n.split())
            continue
        out = jiwer.process_words(ref_n, hyp_n or "")
        subs, dels, ins, hits = subs + out.substitutions, dels + out.deletions, ins + out.insertions, hits + out.hits
    words = subs + dels + hits
    return {
        "wer": (subs + dels + ins) / words if words else float(ins > 0),
        "substitutions": subs,
        "deletions": dels,
        "insertions": ins,
        "words": words,
    }


def character_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER over normalized texts (spaces count as characters)."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return 0.0
    return jiwer.cer([r for r, _ in pairs], [h for _, h in pairs])


# ------------------------------------------------------------------------------------------------ eval runs
def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores of per-utterance records: WER, CER, error counts, per source, RTFx and latency percentiles."""
    scored = [r for r in records if "error" not in r]
    refs, hyps = [r["reference"] for r in scored], [r["hypothesis"] for r in scored]
    summary: dict[str, Any] = {"utterances": len(scored), "failed": len(records) - len(scored)}
    summary.update(word_error_rate(refs, hyps) if scored else {"wer": 0.0})
    summary["cer"] = character_error_rate(refs, hyps) if scored else 0.0
    by_source: dict[str, Any] = {}
    for source in sorted({r.get("source", "") for r in scored}):
        part = [r for r in scored if r.get("source", "") == source]
        score = word_error_rate([r["reference"] for r in part], [r["hypothesis"] for r in part])
        by_source[source or "(none)"] = {"utterances": len(part), "wer": score["wer"], "words": score["words"]}
    summary["by_source"] = by_source
    audio_s = sum(r["duration"] for r in scored)
    # Each batch's wall time is counted once (its records share it), so batched runs are not overcounted.
    batches = {r["batch"]: r["latency_s"] for r in scored}
    wall = sum(batches.values())
    summary["audio_seconds"] = round(audio_s, 2)
    summary["wall_seconds"] = round(wall, 2)
    summary["rtfx"] = round(audio_s / wall, 2) if wall else 0.0
    latencies = [r["latency_s"] for r in scored]
    summary["latency_s"] = {q: round(_percentile(latencies, int(q[1:])), 3) for q in ("p50", "p90", "p99")}
    return summary


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The records of an utterance log; a line cut by a kill ends it (everything after it is redone)."""
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


class RunMismatchError(ValueError):
    """An output folder holds another model's (or other weights') utterance log."""


def _check_same_run(path: Path, recognizer: Any, data_name: str, resuming: bool, main: bool) -> None:
    # A folder is named after the model's name, not its weights: a retrained runs/x/final evaluated into the same
    # folder would otherwise "resume" the old weights' log and report it as the new model's.
    # Nor may a swapped word list (the same penalty, another lexicon.txt) resume a joint-decoding log.
    identity = {"model": recognizer.name, "weights_sha256": getattr(recognizer, "weights_sha256", None)}
    if getattr(recognizer, "lexicon_sha256", None):
        identity["lexicon_sha256"] = recognizer.lexicon_sha256
    if resuming and path.is_file():
        before = json.loads(path.read_text())
        if {k: before.get(k) for k in identity} != identity:
            lexicons = (before.get("lexicon_sha256"), identity.get("lexicon_sha256"))
            lexicon = f", lexicon {lexicons[0]} against {lexicons[1]}" if lexicons[0] != lexicons[1] else ""
            raise RunMismatchError(
                f"{path.parent} holds the log of another run ({before.get('model')}, weights "
                f"{before.get('weights_sha256')}), not of {identity['model']} (weights {identity['weights_sha256']}"
                f"{lexicon}); "
                "give another --output-dir, or delete that folder to start over"
            )
    elif main:
        _write_atomic(path, json.dumps({**identity, "data": data_name}, indent=2) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def process_state() -> Any:
    """accelerate's view of this process: which of how many, and its device. Launched as several processes on
    a machine without CUDA, they join one gloo group on the CPU (accelerate's default would leave each alone)."""
    import torch
    from accelerate import PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return PartialState(cpu=True, backend="gloo")
    return PartialState()


def run_evaluation(
    recognizer: Any,
    rows: list[dict[str, Any]],
    output_dir: Path,
    batch_size: int = 8,
    progress: bool = True,
    data_name: str = "",
) -> dict[str, Any]:
    """Transcribe and score `rows`, appending one JSON line per utterance to utterances.jsonl as it goes, so a
    killed evaluation resumes where it stopped; writes results.json and returns it.

    Under `accelerate launch` (several GPUs or processes) each process takes every N-th remaining utterance and
    logs to its own utterances.rankR.jsonl; the main process then merges them in data order and scores the
    whole, so the results equal a one-process run's (RTFx then sums the processes' busy time).
    """
    from tqdm.auto import tqdm

    from .data import read_clip

    state = process_state()
    rank, world = state.process_index, state.num_processes
    output_dir.mkdir(parents=True, exist_ok=True)
    log = output_dir / "utterances.jsonl"
    parts = sorted(output_dir.glob("utterances.rank*.jsonl"))
    records = [r for path in [log, *parts] for r in _read_log(path)]
    _check_same_run(output_dir / "run.json", recognizer, data_name, resuming=bool(records), main=state.is_main_process)
    done = {r["id"] for r in records}
    todo = [r for r in rows if str(r["id"]) not in done][rank::world]
    state.wait_for_everyone()  # every process has read the logs before any writes to them
    first_batch = max((r["batch"] for r in records), default=-1) + 1
    own_log = log if world == 1 else output_dir / f"utterances.rank{rank}.jsonl"
    own = _read_log(own_log)
    _write_atomic(own_log, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in own))  # drop a cut line
    with (
        open(own_log, "a") as out,
        tqdm(total=len(rows), initial=len(done), unit="utt", disable=not progress or not state.is_main_process) as bar,
    ):
        for k, start in enumerate(range(0, len(todo), batch_size)):
            b = first_batch + k * world + rank  # batch numbers stay unique across processes
            chunk, good, arrays, failed = todo[start : start + batch_size], [], [], []
            for row in chunk:
                try:
                    arrays.append(read_clip(row["audio"]))
                    good.append(row)
                except AudioError as err:
                    failed.append({"id": str(row["id"]), "source": row.get("source", ""), "error": str(err)})
            began = time.perf_counter()
            hyps = recognizer.transcribe(arrays) if arrays else []
            latency = time.perf_counter() - began
            for row, hyp in zip(good, hyps, strict=True):
                record = {
                    "id": str(row["id"]),
                    "source": row.get("source", ""),
                    "duration": row["duration"],
                    "reference": row["text"],
                    "hypothesis": hyp,
                    "batch": b,
                    "latency_s": latency,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            for record in failed:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(chunk) * world)  # the others progress at about the same pace
    state.wait_for_everyone()
    results_file = output_dir / "results.json"
    if state.is_main_process:
        parts = sorted(output_dir.glob("utterances.rank*.jsonl"))
        merged = {r["id"]: r for path in [log, *parts] for r in _read_log(path)}
        order = {str(row["id"]): i for i, row in enumerate(rows)}
        records = sorted(merged.values(), key=lambda r: order.get(r["id"], len(order)))
        _write_atomic(log, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        for path in parts:
            path.unlink()
        results = {"model": recognizer.name, "data": data_name, "data_rows": len(rows), "batch_size": batch_size}
        results["processes"] = world
        # latency_s: wall time of the batch an utterance was transcribed in (batch_size 1: per utterance).
        results.update({**summarize(records), **recognizer.describe(), **environment()})
        _write_atomic(results_file, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    state.wait_for_everyone()
    return json.loads(results_file.read_text())


def environment() -> dict[str, Any]:
    """Device, versions and date of an evaluation run."""
    import platform
    import subprocess
    from datetime import datetime, timezone
    from importlib import metadata

    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    try:
        code = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        code = ""
    versions = {}
    for package in ("tiny-audio", "torch", "transformers", "faster-whisper", "pocketsphinx", "whisper-normalizer"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "device": device,
        "versions": versions,
        "code_version": code or versions.get("tiny-audio", ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
