"""Tiny random backbones (2 layers, width 32) built in-process, for tests, demos and smoke runs; no network.

audio_dir, text_dir = make_tiny_backbones("/tmp/tiny", encoder="whisper", decoder="qwen3")
model = ASRModel(ASRConfig(audio_model_id=audio_dir, text_model_id=text_dir))
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    HubertConfig,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Wav2Vec2Config,
    WavLMConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

ENCODERS = ("hubert", "wav2vec2", "wavlm", "whisper")
DECODERS = ("qwen3", "llama")
WIDTH = 32
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = (
    "the quick brown fox jumps over the lazy dog. transcribe: hello world, this is a test of speech recognition. "
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country. "
    "one two three four five six seven eight nine ten zero yes no stop go left right up down"
)


def tiny_encoder_config(kind: str) -> PreTrainedConfig:
    """A 2-layer, width-32 config of an encoder family (masks supported: stable layer norm)."""
    common = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    wave = dict(
        conv_dim=(WIDTH,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=32,
    )
    if kind == "hubert":
        return HubertConfig(**common, **wave)
    if kind == "wav2vec2":
        return Wav2Vec2Config(**common, **wave)
    if kind == "wavlm":
        return WavLMConfig(**common, **wave, num_buckets=32, max_bucket_distance=100)
    if kind == "whisper":
        return WhisperConfig(
            d_model=WIDTH,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            num_mel_bins=80,
            vocab_size=64,
            max_source_positions=1500,
            max_target_positions=64,
            decoder_start_token_id=1,
            pad_token_id=0,
            eos_token_id=2,
            bos_token_id=1,
        )
    raise ValueError(f"unknown encoder kind {kind!r}; choose from {ENCODERS}")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with ChatML special tokens and template."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML
    return fast


def tiny_decoder_config(kind: str, vocab_size: int) -> PreTrainedConfig:
    """A 2-layer, width-32 causal LM config (Qwen3 or Llama family)."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    if kind == "qwen3":
        return Qwen3Config(**common)
    if kind == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unknown decoder kind {kind!r}; choose from {DECODERS}")


def make_tiny_backbones(folder: str | Path, encoder: str = "whisper", decoder: str = "qwen3", seed: int = 0):
    """Save a tiny random encoder and decoder (with tokenizer) as hub-style folders; returns both paths."""
    folder = Path(folder)
    torch.manual_seed(seed)
    audio_dir, text_dir = folder / f"tiny-{encoder}", folder / f"tiny-{decoder}"
    config = tiny_encoder_config(encoder)
    if encoder == "whisper":
        WhisperModel(config).save_pretrained(audio_dir)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(audio_dir)
    else:
        AutoModel.from_config(config).save_pretrained(audio_dir)  # no feature extractor: the default is used
    tokenizer = tiny_tokenizer()
    lm = AutoModelForCausalLM.from_config(tiny_decoder_config(decoder, len(tokenizer)))
    lm.save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)
    return str(audio_dir), str(text_dir)


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A synthetic clip: a tone plus a little noise (float32, mono)."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers started by tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url` until it answers. If `proc` exits first, or `timeout_s` passes (the process is then killed),
    raise RuntimeError with the tail of its output."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                output = proc.stdout or proc.stderr
                tail = output.read().decode()[-3000:] if output else ""
                raise RuntimeError(f"the process exited before {url} answered: {tail}") from None
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")
