"""Named offline backbones: conversion proven on real speech, atomic and checked caching, GGUF to plain weights."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperForConditionalGeneration, WhisperProcessor

from tiny_audio import ASRConfig, ASRModel, load_audio
from tiny_audio.audio import BUNDLED_SAMPLE
from tiny_audio.backbones import backbone_folder, ct2_folder, prepare, state, verify
from tiny_audio.data import load_rows

pytestmark = pytest.mark.slow
JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def words(text: str) -> str:
    """Lower case, punctuation dropped: the two decoders differ only in near-tied commas and full stops."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def whisper_transcribe(folder: Path, paths: list[str], english_only: bool = False) -> list[str]:
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    options = {} if english_only else {"language": "en", "task": "transcribe"}
    texts = []
    for path in paths:
        features = processor(load_audio(path), sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(features, num_beams=1, **options)
        texts.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    return texts


@pytest.fixture(scope="session")
def whisper_base():
    return prepare("whisper-base")


def test_converted_whisper_models_transcribe_jfk(whisper_base):
    assert words(whisper_transcribe(whisper_base, [str(BUNDLED_SAMPLE)])[0]) == JFK
    tiny_en = prepare("whisper-tiny.en")
    assert words(whisper_transcribe(tiny_en, [str(BUNDLED_SAMPLE)], english_only=True)[0]) == JFK


def test_converted_whisper_base_matches_faster_whisper_on_dev(whisper_base, shared_data):
    faster_whisper = pytest.importorskip("faster_whisper")
    # faster-whisper runs the very CTranslate2 files the conversion started from.
    reference = faster_whisper.WhisperModel(str(ct2_folder("whisper-base")), device="cpu", compute_type="float32")
    rows, _ = load_rows(shared_data / "dev" / "manifest.jsonl")
    picked: list[str] = []
    for prefix, n in (("libri", 3), ("an4", 2), ("lj", 2), ("jfk", 1)):
        picked += [r["audio"] for r in rows if r["id"].startswith(prefix)][:n]
    ours = whisper_transcribe(whisper_base, picked)
    for path, text in zip(picked, ours, strict=True):
        segments, _ = reference.transcribe(
            path,
            beam_size=1,
            language="en",
            without_timestamps=True,
            condition_on_previous_text=False,
            temperature=0.0,
            vad_filter=False,
        )
        expected = "".join(s.text for s in segments)
        assert words(text) == words(expected), path


def test_prepare_is_cached_checked_and_repairs_a_damaged_copy(whisper_base):
    assert state("whisper-base") == "ready"
    stamp = (whisper_base / "model.safetensors").stat().st_mtime_ns
    assert prepare("whisper-base") == whisper_base
    assert (whisper_base / "model.safetensors").stat().st_mtime_ns == stamp, "a ready copy is not converted again"
    assert verify(whisper_base, full=True) is None


def test_a_killed_conversion_leaves_nothing_that_loads(tmp_path):
    env = {**os.environ, "TINY_AUDIO_CACHE": str(tmp_path)}
    code = "from tiny_audio.backbones import prepare; prepare('whisper-tiny.en')"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    parent = tmp_path / "backbones"
    deadline = time.time() + 120
    while time.time() < deadline and not list(parent.glob(".whisper-tiny.en.tmp-*")):
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the conversion
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (parent / "whisper-tiny.en").exists(), "the final folder appears only when complete"
    os.environ["TINY_AUDIO_CACHE"], old = str(tmp_path), os.environ["TINY_AUDIO_CACHE"]
    try:
        assert state("whisper-tiny.en") == "not prepared"
        folder = prepare("whisper-tiny.en")
        assert verify(folder, full=True) is None
        (folder / "model.safetensors").write_bytes(b"truncated")
        assert state("whisper-tiny.en") != "ready"
        assert verify(prepare("whisper-tiny.en"), full=True) is None, "a damaged copy is converted again"
    finally:
        os.environ["TINY_AUDIO_CACHE"] = old


def test_smollm2_gguf_becomes_a_plain_trainable_model(tmp_path):
    folder = prepare("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = tokenizer.decode(model.generate(**inputs, max_new_tokens=8, do_sample=False)[0])
    assert "Paris" in answer
    model.save_pretrained(tmp_path / "resaved")  # refused for models transformers marks as quantized


def test_named_backbones_build_an_asr_model(tmp_path):
    model = ASRModel(ASRConfig(audio_model_id="whisper-base", text_model_id="smollm2-135m-instruct"))
    report = model.parameter_report()
    assert report["audio_tower"]["total"] == 20_590_592 + report["audio_tower"]["lora"]
    batch = model.processor([str(BUNDLED_SAMPLE)], text=["and so my fellow americans"], padding_side="right")
    assert torch.isfinite(model(**batch).loss)
    model.save_pretrained(tmp_path / "m")
    assert ASRModel.from_pretrained(tmp_path / "m").config.audio_model_id == "whisper-base"
    assert backbone_folder("whisper-base").is_dir()
