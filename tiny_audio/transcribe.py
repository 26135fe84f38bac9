"""Transcription of many clips: batching, splitting long audio into windows, segment times, output formats.

    from tiny_audio import load_model, transcribe
    results = transcribe(load_model("my-asr"), ["a.flac", "b.wav"], batch_size=8)
    results[0].text, results[0].segments

Audio longer than `chunk_length_s` is cut into consecutive windows of that length, each transcribed on its own;
the texts are joined in order. (Windows do not overlap yet: a word cut at a boundary can be mangled.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .audio import load_audio


@dataclass
class Segment:
    """A piece of a transcript with its time span in seconds."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """The transcript of one input."""

    text: str
    duration: float
    segments: list[Segment] = field(default_factory=list)


def _windows(audio: np.ndarray, rate: int, chunk_length_s: float | None) -> list[tuple[float, np.ndarray]]:
    if not chunk_length_s or len(audio) <= chunk_length_s * rate:
        return [(0.0, audio)]
    step = int(chunk_length_s * rate)
    # Fold a short tail (< 1 s) into the previous window rather than transcribing a fragment alone.
    starts = [s for s in range(0, len(audio), step) if s == 0 or len(audio) - s >= rate]
    ends = [*starts[1:], len(audio)]
    return [(s / rate, audio[s:e]) for s, e in zip(starts, ends, strict=True)]


def transcribe_arrays(
    model: Any,
    arrays: list[np.ndarray],
    batch_size: int = 8,
    chunk_length_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    **generate_kwargs: Any,
) -> list[Transcript]:
    """Transcribe 16 kHz mono arrays in batches; `progress(n)` is called after each batch of n windows."""
    rate = model.config.sample_rate
    chunk_length_s = model.config.chunk_length_s if chunk_length_s is None else chunk_length_s
    pieces = [(i, start, w) for i, a in enumerate(arrays) for start, w in _windows(a, rate, chunk_length_s)]
    # Similar lengths together waste less padding; results are put back in order below.
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][2]))
    texts: list[str] = [""] * len(pieces)
    processor = model.processor
    device = next(model.parameters()).device
    for b in range(0, len(order), max(batch_size, 1)):
        idx = order[b : b + max(batch_size, 1)]
        batch = processor([pieces[j][2] for j in idx]).to(device)
        for j, text in zip(idx, processor.batch_decode(model.generate(**batch, **generate_kwargs)), strict=True):
            texts[j] = text
        if progress:
            progress(len(idx))
    results = [Transcript(text="", duration=len(a) / rate) for a in arrays]
    for (i, start, window), text in zip(pieces, texts, strict=True):
        results[i].segments.append(Segment(round(start, 3), round(start + len(window) / rate, 3), text))
    for r in results:
        r.text = " ".join(s.text for s in r.segments if s.text)
    return results


def transcribe(model: Any, inputs: Iterable[Any], batch_size: int = 8, **kwargs: Any) -> list[Transcript]:
    """Transcribe paths, bytes, arrays or {"array", "sampling_rate"} dicts (see transcribe_arrays)."""
    arrays = [load_audio(x, target_rate=model.config.sample_rate) for x in inputs]
    return transcribe_arrays(model, arrays, batch_size=batch_size, **kwargs)


# ------------------------------------------------------------------------------------------------- formats
def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_transcript(result: Transcript, fmt: str, source: str = "") -> str:
    """Render as txt, json, srt or vtt."""
    if fmt == "txt":
        return result.text + "\n"
    if fmt == "json":
        return json.dumps({"file": source, **asdict(result)}, ensure_ascii=False, indent=2) + "\n"
    cues = [s for s in result.segments if s.text]
    if fmt == "srt":
        return "".join(
            f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n\n" for n, s in enumerate(cues, 1)
        )
    if fmt == "vtt":
        body = "".join(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n\n" for s in cues)
        return "WEBVTT\n\n" + body
    raise ValueError(f"unknown format {fmt!r}: choose txt, json, srt or vtt")
