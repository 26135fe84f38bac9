"""ASRProcessor: the encoder's feature extractor plus the LLM's tokenizer, and the prompt that joins them.

It turns clips (and, for training, transcripts) into one padded batch:
  input_features        B, S (waveform encoders) or B, M, F (Whisper log-mels)
  audio_attention_mask  B, S or B, F   (1 on real samples/frames)
  input_ids             B, L  chat prompt with the audio placeholder expanded to one token per projected frame
  attention_mask        B, L
  labels                B, L  transcript + end-of-turn token; -100 elsewhere (only with text)
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoTokenizer,
    BatchFeature,
    PreTrainedConfig,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

from .audio import load_audio
from .backbones import resolve
from .config import ASRConfig
from .encoder import encoder_output_length, feature_length, is_whisper

MIN_SAMPLES = 1600  # clips shorter than 0.1 s are zero-padded so every encoder yields at least one frame
IGNORE_INDEX = -100

# Used when the LLM's tokenizer has no chat template (base models): the same ChatML layout as SmolLM2/Qwen.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_feature_extractor(audio_config: PreTrainedConfig, sample_rate: int = 16000):
    """Feature extractor for an encoder whose folder ships none."""
    if is_whisper(audio_config):
        return WhisperFeatureExtractor(feature_size=audio_config.num_mel_bins, sampling_rate=sample_rate)
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


class ASRProcessor:
    """Feature extractor + tokenizer + prompt building for ASRModel."""

    def __init__(self, feature_extractor: Any, tokenizer: Any, config: ASRConfig):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.config = config
        if config.audio_config is None:
            raise ValueError("ASRProcessor needs config.audio_config (the encoder's config) to count audio frames")
        self.audio_config = config.audio_config
        if tokenizer.chat_template is None:
            tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        if config.audio_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([config.audio_token], special_tokens=True)
        # The audio token id may lie past the LLM's embedding table: it is never looked up, only replaced.
        config.audio_token_id = tokenizer.convert_tokens_to_ids(config.audio_token)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_token_id = tokenizer.eos_token_id

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: ASRConfig) -> ASRProcessor:
        """Build from the backbones named in the config (their folders or hub ids)."""
        audio_id, text_id = resolve(config.audio_model_id), resolve(config.text_model_id)
        if config.audio_config is None:
            config.audio_config = AutoConfig.from_pretrained(audio_id)
        feature_extractor = None
        if config.audio_model_id:  # an encoder built from its config alone has nothing to look up (no network)
            with contextlib.suppress(OSError, ValueError, TypeError):
                feature_extractor = AutoFeatureExtractor.from_pretrained(audio_id)
        if feature_extractor is None:
            feature_extractor = default_feature_extractor(config.audio_config, config.sample_rate)
        tokenizer = AutoTokenizer.from_pretrained(text_id)
        return cls(feature_extractor, tokenizer, config)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, config: ASRConfig | None = None) -> ASRProcessor:
        """Load the processor files saved beside an ASRModel."""
        config = config or ASRConfig.from_pretrained(folder)
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
        # Passing the config stops AutoTokenizer from reading config.json, whose auto_map would ask to run code.
        tokenizer = AutoTokenizer.from_pretrained(folder, config=config)
        return cls(feature_extractor, tokenizer, config)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write tokenizer and feature extractor files."""
        self.tokenizer.save_pretrained(folder)
        self.feature_extractor.save_pretrained(folder)

    # -------------------------------------------------------------------------------------------- audio side
    def num_audio_tokens(self, num_samples: int) -> int:
        """LLM positions the projector yields for a clip of `num_samples` (16 kHz)."""
        frames = encoder_output_length(
            self.audio_config, feature_length(self.audio_config, max(num_samples, MIN_SAMPLES))
        )
        return math.ceil(frames / self.config.projector_stack_size)

    def _features(self, array: np.ndarray) -> np.ndarray:
        if array.shape[0] < MIN_SAMPLES:
            array = np.pad(array, (0, MIN_SAMPLES - array.shape[0]))
        rate = self.config.sample_rate
        if is_whisper(self.audio_config):
            # One clip at a time at its real length: no 30 s padding (see encoder.py).
            return self.feature_extractor(array, sampling_rate=rate, padding="longest", return_tensors="np")[
                "input_features"
            ][0]  # M, F
        return self.feature_extractor(array, sampling_rate=rate, return_tensors="np")["input_values"][0]  # S

    def audio_features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Pad per-clip features into input_features and audio_attention_mask."""
        feats = [self._features(a) for a in audios]
        lengths = [f.shape[-1] for f in feats]
        longest = max(lengths)
        padded = np.zeros((len(feats), *feats[0].shape[:-1], longest), dtype=np.float32)
        mask = np.zeros((len(feats), longest), dtype=np.int64)
        for i, (f, n) in enumerate(zip(feats, lengths, strict=True)):
            padded[i, ..., :n] = f
            mask[i, :n] = 1
        return {"input_features": torch.from_numpy(padded), "audio_attention_mask": torch.from_numpy(mask)}

    # --------------------------------------------------------------------------------------------- text side
    def prompt_text(self, num_audio_tokens: int) -> str:
        """The chat-formatted prompt with the placeholder expanded, ending where the transcript starts."""
        messages = []
        if self.config.system_prompt:
            messages.append({"role": "system", "content": self.config.system_prompt})
        user = self.config.user_prompt.replace(self.config.audio_token, self.config.audio_token * num_audio_tokens)
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def __call__(
        self,
        audio: Any | list[Any],
        text: str | list[str] | None = None,
        sampling_rate: int | None = None,
        padding_side: str = "left",
    ) -> BatchFeature:
        """Prepare a batch; give `text` for training (labels), leave it out for generation (left padding)."""
        audios = audio if isinstance(audio, list) else [audio]
        arrays = [load_audio(a, sampling_rate, self.config.sample_rate) for a in audios]
        texts = [text] if isinstance(text, str) else text
        if texts is not None and len(texts) != len(arrays):
            raise ValueError(f"got {len(arrays)} audio clips but {len(texts)} transcripts")

        batch = {**self.text_inputs([len(a) for a in arrays], texts, padding_side), **self.audio_features(arrays)}
        return BatchFeature(batch)

    def text_inputs(
        self, num_samples: list[int], texts: list[str] | None = None, padding_side: str = "left"
    ) -> dict[str, torch.Tensor]:
        """Prompt ids (placeholder expanded for clips of `num_samples`), attention mask, and labels with texts."""
        rows, label_rows = [], []
        for i, n in enumerate(num_samples):
            ids = self.tokenizer(self.prompt_text(self.num_audio_tokens(n)), add_special_tokens=False)["input_ids"]
            labels = [IGNORE_INDEX] * len(ids)
            if texts is not None:
                target = self.tokenizer(texts[i], add_special_tokens=False)["input_ids"]
                if self.eos_token_id is not None:
                    target = target + [self.eos_token_id]
                ids, labels = ids + target, labels + target
            rows.append(ids)
            label_rows.append(labels)

        longest = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(rows, label_rows, strict=True)):
            span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, span] = torch.tensor(ids)
            attention_mask[i, span] = 1
            labels[i, span] = torch.tensor(lab)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if texts is not None:
            batch["labels"] = labels
        return batch

    def batch_decode(self, token_ids: torch.Tensor | list[list[int]], **kwargs: Any) -> list[str]:
        """Token ids -> stripped transcripts (special tokens dropped)."""
        kwargs.setdefault("skip_special_tokens", True)
        return [t.strip() for t in self.tokenizer.batch_decode(token_ids, **kwargs)]

    def decode(self, token_ids: torch.Tensor | list[int], **kwargs: Any) -> str:
        """One sequence of token ids -> stripped transcript."""
        return self.batch_decode([token_ids], **kwargs)[0]
