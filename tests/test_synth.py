"""Synthetic speech: many voices, a manifest, and speech that a real recognizer understands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from tiny_audio import load_audio
from tiny_audio.backbones import prepare
from tiny_audio.evaluate import word_error_rate
from tiny_audio.synth import synthesize

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng flite)"
)
SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_synth_voices_manifest_and_intelligibility(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text(f"{SENTENCE}\n\nPlease call Stella.\n")
    counts = synthesize(text, tmp_path / "out", copies=3, seed=1)
    assert counts["clips"] == 6 and counts["failed"] == 0 and counts["voices"] >= 3
    rows = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len({r["speaker"] for r in rows}) == 6, "each copy gets its own voice, speed and pitch"
    fox = [r for r in rows if r["text"] == SENTENCE]
    folder = prepare("whisper-base")
    model, processor = (
        WhisperForConditionalGeneration.from_pretrained(folder).eval(),
        WhisperProcessor.from_pretrained(folder),
    )
    hyps = []
    for row in fox:
        features = processor(load_audio(tmp_path / "out" / row["audio"]), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(features.input_features, language="en", task="transcribe")
        hyps.append(processor.batch_decode(ids, skip_special_tokens=True)[0])
    assert word_error_rate([SENTENCE] * len(fox), hyps)["wer"] < 0.3, hyps


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
    import importlib.util

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
