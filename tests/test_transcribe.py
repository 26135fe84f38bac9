"""Long audio and guards: windows cut in pauses or overlapping and reconciled, silence skipped, loops cut.

The recognizer here is an oracle for "tone words" (each word a tone burst of its own pitch): it names every
burst it hears whole and mishears a burst cut by the window edge, as a real model garbles a cut word. So the
joined transcript is exact only if the windowing and reconciliation are right.
"""

from __future__ import annotations

import numpy as np
import pytest

from tiny_audio.transcribe import cut_repetition, is_silent, plan_windows, splice, transcribe_windows

RATE = 16000
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
VOCAB = {220 + 40 * i: w for i, w in enumerate(WORDS.split())}  # noqa: SIM905 - a sentence reads better


def tone_words(n_words: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    parts, words = [np.zeros(int(0.2 * RATE), np.float32)], []
    for _ in range(n_words):
        freq = int(rng.choice(list(VOCAB)))
        t = np.arange(int(rng.uniform(0.25, 0.45) * RATE)) / RATE
        parts.append((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        gap = rng.uniform(0.06, 0.12) if rng.random() < 0.8 else rng.uniform(0.3, 0.6)  # short and long pauses
        parts.append(np.zeros(int(gap * RATE), np.float32))
        words.append(VOCAB[freq])
    return np.concatenate(parts), words


def oracle(batch: list[np.ndarray]) -> list[str]:
    texts = []
    for audio in batch:
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        loud = np.sqrt((frames**2).mean(1)) > 0.01
        words, i = [], 0
        while i < len(loud):
            if not loud[i]:
                i += 1
                continue
            j = i
            while j < len(loud) and loud[j]:
                j += 1
            if i == 0 or j == len(loud):
                words.append("uh")  # a word cut by the window edge is misheard
            else:
                burst = frames[i:j].reshape(-1)
                freq = np.argmax(np.abs(np.fft.rfft(burst))) * RATE / len(burst)
                words.append(VOCAB[min(VOCAB, key=lambda f: abs(f - freq))])
            i = j
        texts.append(" ".join(words))
    return texts


@pytest.mark.parametrize("segment", ["silence", "stride"])
def test_long_audio_is_joined_without_doubled_or_dropped_words(segment):
    audio, words = tone_words(120, seed=1)  # about 65 s
    [result] = transcribe_windows(oracle, [audio], RATE, chunk_length_s=8, stride_length_s=1.5, segment=segment)
    assert result.text.split() == words
    # Segments tile the audio and carry all the words, in order.
    assert result.segments[0].start == 0 and result.segments[-1].end == pytest.approx(len(audio) / RATE, abs=1e-3)
    for a, b in zip(result.segments, result.segments[1:], strict=False):
        assert a.end == b.start
    assert " ".join(s.text for s in result.segments if s.text).split() == words


def test_windows_without_overlap_or_pauses_would_garble_words():
    """The check above can fail: plain fixed windows (no overlap) cut words and mishear them."""
    audio, words = tone_words(120, seed=1)
    [result] = transcribe_windows(oracle, [audio], RATE, chunk_length_s=8, stride_length_s=0, segment="stride")
    assert result.text.split() != words and "uh" in result.text.split()


def test_window_plans_cover_the_audio_within_the_chunk_length():
    audio, _ = tone_words(60, seed=2)
    for segment, stride in [("silence", None), ("stride", [2.0, 1.0])]:
        windows = plan_windows(audio, RATE, 6.0, stride, segment)
        assert all(w.end - w.start <= 6 * RATE for w in windows)
        assert windows[0].keep_from == 0 and windows[-1].keep_to == len(audio)
        assert all(a.keep_to == b.keep_from for a, b in zip(windows, windows[1:], strict=False))
    assert len(plan_windows(audio[: 5 * RATE], RATE, 6.0)) == 1
    with pytest.raises(ValueError, match="less than 1 s of new audio"):
        plan_windows(audio, RATE, 6.0, [3.0, 2.5], "stride")


def test_splice_finds_the_overlap_and_ignores_a_chance_word():
    assert splice(["one", "two", "three", "four", "five"], ["four", "five", "six", "seven"], 6) == (4, 1)
    assert splice(["a", "b", "c"], ["d", "e", "f"], 6) == (3, 0)
    assert splice(["the", "cat", "sat", "down"], ["a", "dog", "ran", "the", "way"], 6) == (4, 0)


def test_silent_windows_are_not_run():
    calls = []

    def recognize(batch):
        calls.append(len(batch))
        return ["words"] * len(batch)

    rng = np.random.default_rng(0)
    silence = np.zeros(10 * RATE, np.float32)
    hum = (10 ** (-60 / 20) * rng.standard_normal(10 * RATE)).astype(np.float32)  # -60 dBFS noise
    speechlike, _ = tone_words(5)
    results = transcribe_windows(recognize, [silence, hum, speechlike], RATE)
    assert [r.text for r in results] == ["", "", "words"] and calls == [1]
    assert is_silent(silence, RATE, -50) and not is_silent(speechlike, RATE, -50)
    assert not is_silent(silence, RATE, None)  # the guard can be switched off


def test_repetition_loops_are_cut():
    assert cut_repetition("i went home i went home i went home i went home") == "i went home"
    assert cut_repetition("hello hello hello hello hello") == "hello"
    assert cut_repetition("thank you. Thank you! thank you thank you and more") == "thank you. and more"
    assert cut_repetition("about the ha-h-h-h-h-h-h-h- Still it was") == "about the ha-h- Still it was"
    assert cut_repetition("up to 3,,,,,,,,,,, then") == "up to 3, then"
    for kept in ["that that is", "no no", "a b c d e f", "one one one", "a well-known  twenty-five..."]:
        assert cut_repetition(kept) == kept


def test_streaming_yields_pieces_that_join_to_the_batch_transcript(make_model):
    from tiny_audio.testing import tone
    from tiny_audio.transcribe import stream_transcribe, transcribe

    model = make_model()
    tokenizer = model.processor.tokenizer
    # The random model favours a newline; without blank tokens it says words, so there is something to stream.
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    audio = np.concatenate([tone(1.2, 300, seed=4), np.zeros(RATE // 2, np.float32), tone(1.0, 500, seed=5)])
    options = {"max_new_tokens": 6, "chunk_length_s": 1.5, "suppress_tokens": [*blank, model.config.audio_token_id]}
    pieces = list(stream_transcribe(model, audio, **options))
    [batch] = transcribe(model, [audio], **options)
    assert len(pieces) > 1 and "".join(pieces) == batch.text
    assert list(stream_transcribe(model, np.zeros(3 * RATE, np.float32))) == []  # silence: nothing at all
    # A model whose default is a beam (the built-in one's) streams greedily; a beam asked for is a clear error.
    model.config.generation_defaults["num_beams"] = 3
    assert "".join(stream_transcribe(model, audio, **options)) == batch.text
    with pytest.raises(ValueError, match="streaming decodes greedily"):
        next(stream_transcribe(model, audio, **options, num_beams=3))
