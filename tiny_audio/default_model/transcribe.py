"""Transcription of many clips: batching, splitting long audio into windows, segment times, output formats.

    from tiny_audio import load_model, transcribe
    results = transcribe(load_model("my-asr"), ["a.flac", "b.wav"], batch_size=8)
    results[0].text, results[0].segments

Audio longer than `chunk_length_s` is covered by windows: by default cut in pauses (the quietest moment near
each limit), or with `segment="stride"` overlapping by `stride_length_s` with the overlapping words reconciled.
Guards: windows that never rise above `silence_threshold_db` are not run (empty text), run-on repetition is cut,
and the model caps new tokens by the audio's length (generation_defaults["max_new_tokens_per_second"]).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
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


@dataclass
class Window:
    """A stretch of one input to transcribe: samples [start, end); `keep_from`/`keep_to` bound the part it is
    responsible for (the rest is context shared with a neighbour, reconciled when the texts are joined)."""

    index: int  # which input
    start: int
    end: int
    keep_from: int
    keep_to: int


def frame_levels(audio: np.ndarray, rate: int, frame_s: float = 0.01) -> np.ndarray:
    """RMS level in dBFS of consecutive frames of `frame_s` seconds."""
    size = max(int(rate * frame_s), 1)
    n = len(audio) // size
    if n == 0:
        return np.array([20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-10)]) if len(audio) else np.array([-200.0])
    frames = audio[: n * size].reshape(n, size).astype(np.float64)
    return 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-10)


def is_silent(audio: np.ndarray, rate: int, threshold_db: float | None) -> bool:
    """No 30 ms of the clip reaches `threshold_db` dBFS: digital silence or a very low hum, nothing to say."""
    if threshold_db is None:
        return False
    levels = frame_levels(audio, rate, 0.03)
    return bool(levels.max() < threshold_db) if len(levels) else True


def _quietest_cut(audio: np.ndarray, rate: int, lo: int, hi: int, span_s: float = 0.2) -> int:
    """The middle of the quietest `span_s` stretch in samples [lo, hi): where a cut is least likely to split a
    word."""
    levels = 10 ** (frame_levels(audio[lo:hi], rate) / 10)  # power per 10 ms frame
    width = max(int(span_s / 0.01), 1)
    if len(levels) <= width:
        return (lo + hi) // 2
    smooth = np.convolve(levels, np.ones(width) / width, mode="valid")
    best = int(np.argmin(smooth))
    return lo + int((best + width / 2) * 0.01 * rate)


def plan_windows(
    audio: np.ndarray,
    rate: int,
    chunk_length_s: float | None,
    stride_length_s: Any = None,
    segment: str = "silence",
    index: int = 0,
) -> list[Window]:
    """How to cover one input with windows of at most `chunk_length_s` seconds.

    segment="silence": consecutive windows cut at the quietest 0.2 s within the last `stride` seconds before
    each limit, so cuts fall in pauses and nothing needs reconciling. segment="stride": fixed windows that
    overlap by `stride_length_s` (left, right) seconds, as in transformers' ASR pipeline; the overlapping texts
    are reconciled word by word when joined (see splice and transcribe_windows).
    """
    n = len(audio)
    limit = int(chunk_length_s * rate) if chunk_length_s else n
    if n <= limit:
        return [Window(index, 0, n, 0, n)]
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    left_s, right_s = (stride_length_s, stride_length_s) if np.isscalar(stride_length_s) else stride_length_s
    left, right = int(left_s * rate), int(right_s * rate)
    if segment == "silence":
        windows, start = [], 0
        search = max(left + right, rate)  # look for a pause in the last part of each window
        while n - start > limit:
            cut = _quietest_cut(audio, rate, start + max(limit - search, limit // 2), start + limit)
            windows.append(Window(index, start, cut, start, cut))
            start = cut
        windows.append(Window(index, start, n, start, n))
        return windows
    if segment != "stride":
        raise ValueError(f"segment must be 'silence' or 'stride', got {segment!r}")
    step = limit - left - right
    if step <= rate:
        raise ValueError(
            f"stride_length_s {stride_length_s} leaves less than 1 s of new audio per {chunk_length_s} s chunk"
        )
    windows, start = [], 0
    while True:
        end = min(start + limit, n)
        last = end == n
        windows.append(Window(index, start, end, start + left if start else 0, n if last else end - right))
        if last:
            return windows
        start += step


_WORD = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _WORD.sub("", word.lower())


def splice(previous: list[str], following: list[str], overlap_words: int) -> tuple[int, int]:
    """Where to join word lists transcribed from overlapping audio: keep previous[:i] + following[j:].

    The longest run of words that the end of `previous` and the start of `following` share (compared without
    case and punctuation, within the last/first `overlap_words` words) is the overlap heard twice; the splice is
    at its middle, so no word is doubled or dropped. Without a match (or with one common word only, which is
    chance) the lists are concatenated whole."""
    tail, head = previous[-overlap_words:], following[:overlap_words]
    offset = len(previous) - len(tail)
    match = SequenceMatcher(None, [_key(w) for w in tail], [_key(w) for w in head], autojunk=False).find_longest_match()
    if match.size == 0 or (match.size == 1 and min(len(tail), len(head)) > 2):
        return len(previous), 0
    half = match.size // 2
    return offset + match.a + half, match.b + half


def _loop_at(keys: list[str], i: int, min_repeats: int, max_period: int) -> tuple[int, int] | None:
    """(period, repeats) of a loop starting at word i, or None."""
    for period in range(1, min(max_period, len(keys) - i) + 1):
        unit, repeats = keys[i : i + period], 1
        while keys[i + repeats * period : i + (repeats + 1) * period] == unit:
            repeats += 1
        if repeats >= min_repeats + (period == 1):
            return period, repeats
    return None


def cut_repetition(text: str, min_repeats: int = 4, max_period: int = 12) -> str:
    """Cut a run-on loop: where a phrase of 2 to `max_period` words repeats `min_repeats` or more times in a row
    (a single word: one more time), keep one copy. Speech repeats a little ("no no no"); decoders that lose their
    place repeat until the token limit ("i went home i went home i went home i went home" -> "i went home").
    Hyphens separate words here too ("ha-h-h-h-h-h" is a loop), and a run of one punctuation mark (not dots:
    "...") is one mark."""
    text = re.sub(r"([,;:!?-])\1{3,}", r"\1", text)
    parts = re.split(r"(\s*-\s*|\s+)", text.strip())
    words, separators = parts[0::2], parts[1::2]
    keys = [_key(w) for w in words]
    kept: list[int] = []
    i = 0
    while i < len(words):
        loop = _loop_at(keys, i, min_repeats, max_period)
        if loop is None:
            kept.append(i)
            i += 1
        else:
            period, repeats = loop
            kept.extend(range(i, i + period))
            i += period * repeats
    # Each kept word after the first with the separator that stood before it.
    return "".join((separators[k - 1] if n else "") + words[k] for n, k in enumerate(kept)).strip()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl without it, Windows)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system after a batch (glibc only; elsewhere a no-op).

    Batches of different shapes fragment glibc's heap, and without this an hour of audio grew the process by
    ~1 GB (benchmarks/long_memory.py); malloc_trim takes a few milliseconds a batch.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def transcribe_windows(
    recognize: Callable[[list[np.ndarray]], list[str]],
    arrays: list[np.ndarray],
    rate: int,
    batch_size: int = 8,
    chunk_length_s: float | None = 30.0,
    stride_length_s: Any = None,
    segment: str = "silence",
    silence_threshold_db: float | None = -50.0,
    progress: Callable[[int], None] | None = None,
) -> list[Transcript]:
    """The model-independent part of transcription: plan windows, skip silent ones, batch the rest through
    `recognize`, cut repetition loops, and join each input's windows into a transcript with segment times."""
    windows = [
        w for i, a in enumerate(arrays) for w in plan_windows(a, rate, chunk_length_s, stride_length_s, segment, i)
    ]
    texts = [""] * len(windows)
    todo = [
        j for j, w in enumerate(windows) if not is_silent(arrays[w.index][w.start : w.end], rate, silence_threshold_db)
    ]
    # Similar lengths together waste less padding; results are put back in order.
    todo.sort(key=lambda j: windows[j].end - windows[j].start)
    step = max(batch_size, 1)
    for b in range(0, len(todo), step):
        idx = todo[b : b + step]
        for j, text in zip(
            idx, recognize([arrays[windows[j].index][windows[j].start : windows[j].end] for j in idx]), strict=True
        ):
            texts[j] = cut_repetition(text.strip())
        _release_freed_memory()
        if progress:
            progress(len(idx))
    # Per input: its words, each tagged with the window (segment) it came from.
    words: list[list[tuple[int, str]]] = [[] for _ in arrays]
    for j, (window, text) in enumerate(zip(windows, texts, strict=True)):
        new, mine = text.split(), words[window.index]
        if mine and window.keep_from > window.start:
            overlap = max(int((window.keep_from - window.start) / rate * 4) + 4, 6)  # ~4 words a second
            keep, skip = splice([w for _, w in mine], new, overlap)
            del mine[keep:]
            new = new[skip:]
        mine.extend((j, w) for w in new)
    results = [
        Transcript(text=" ".join(w for _, w in mine), duration=len(a) / rate)
        for a, mine in zip(arrays, words, strict=True)
    ]
    for j, window in enumerate(windows):
        text = " ".join(w for k, w in words[window.index] if k == j)
        results[window.index].segments.append(
            Segment(round(window.keep_from / rate, 3), round(window.keep_to / rate, 3), text)
        )
    return results


def transcribe_arrays(
    model: Any,
    arrays: list[np.ndarray],
    batch_size: int = 8,
    chunk_length_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    stride_length_s: Any = None,
    segment: str | None = None,
    silence_threshold_db: float | None = -50.0,
    **generate_kwargs: Any,
) -> list[Transcript]:
    """Transcribe 16 kHz mono arrays in batches with a Tiny Audio model; `progress(n)` is called after each batch
    of n windows. Long audio is split as `segment` says (see plan_windows); silent windows are not run."""
    config = model.config
    processor = model.processor
    device = next(model.parameters()).device

    def recognize(batch: list[np.ndarray]) -> list[str]:
        inputs = processor(batch).to(device)
        return processor.batch_decode(model.generate(**inputs, **generate_kwargs))

    return transcribe_windows(
        recognize,
        arrays,
        config.sample_rate,
        batch_size=batch_size,
        chunk_length_s=config.chunk_length_s if chunk_length_s is None else chunk_length_s,
        stride_length_s=config.stride_length_s if stride_length_s is None else stride_length_s,
        segment=segment or "silence",
        silence_threshold_db=silence_threshold_db,
        progress=progress,
    )


def stream_transcribe(
    model: Any,
    audio: Any,
    chunk_length_s: float | None = None,
    segment: str = "silence",
    silence_threshold_db: float | None = -50.0,
    **generate_kwargs: Any,
) -> Iterator[str]:
    """Yield the transcript of one input piece by piece as it is generated (a path, bytes, array or dict).

    Long audio is cut in pauses (`segment="silence"`, the default; overlapping windows cannot be reconciled
    before the next window exists) and the windows are streamed one after another; silent windows are skipped
    and generation stops when a repetition loop starts, as in `transcribe`.

        for piece in stream_transcribe(model, "talk.flac"):
            print(piece, end="", flush=True)
    """
    from threading import Thread

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class StopOnLoop(StoppingCriteria):
        """End generation once the text so far has fallen into a repetition loop."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            text = processor.decode(input_ids[0])
            return torch.tensor([cut_repetition(text) != text], device=input_ids.device)

    if segment != "silence":
        raise ValueError("streaming cuts long audio in pauses only (segment='silence')")
    # Beam search knows its text only when it ends (transformers' streamer refuses it), so streaming decodes
    # greedily, also for a model whose default is a beam (the built-in one's is).
    if int(generate_kwargs.get("num_beams") or 1) > 1:
        raise ValueError("streaming decodes greedily: beam search has no text to show until it ends (num_beams=1)")
    config, processor = model.config, model.processor
    device = next(model.parameters()).device
    array = load_audio(audio, target_rate=config.sample_rate)
    windows = plan_windows(array, config.sample_rate, chunk_length_s or config.chunk_length_s, None, segment)
    first = True
    for window in windows:
        piece = array[window.start : window.end]
        if is_silent(piece, config.sample_rate, silence_threshold_db):
            continue
        streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        options = {
            **generate_kwargs,
            "num_beams": 1,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([StopOnLoop()]),
        }
        inputs = processor([piece]).to(device)
        errors: list[BaseException] = []

        def run(inputs: Any = inputs, options: dict = options, errors: list = errors, streamer: Any = streamer) -> None:
            try:
                model.generate(**inputs, **options)
            except BaseException as err:  # re-raised in the caller's thread below
                errors.append(err)
                streamer.end()

        thread = Thread(target=run, daemon=True)
        thread.start()
        started = False
        for text in streamer:
            if not started:
                text = text.lstrip()
                if not text:
                    continue
                started = True
                if not first:
                    text = " " + text
            first = False
            yield text
        thread.join()
        if errors:
            raise errors[0]


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
