"""The audio tower: loading any transformers speech encoder and running it on padded batches.

Two families are supported:
- waveform encoders (HuBERT, Wav2Vec2, WavLM, Data2VecAudio): input B, S samples, 50 frames/s out;
- the Whisper encoder: input B, M mels, F frames (100/s), 50 frames/s out. It runs on the real length of the
  audio (position table sliced) instead of padding to 30 s, about 4x cheaper on short clips; padded positions
  are masked so a clip gives the same frames alone or inside a batch.

A Whisper encoder can also run in two parts (`encode_audio(..., upto=L)`, then `encode_top`): when only its layers
from L up train (LoRA on `encoder_lora_layers`), the hidden states below them can come from the feature cache.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig
from transformers.masking_utils import create_bidirectional_mask

from .backbones import resolve

WHISPER_HOP_LENGTH = 160  # samples per mel frame at 16 kHz
# WavLM's attention hands these weights straight to F.multi_head_attention_forward, never calling the modules,
# so a LoRA adapter on them would train but change nothing.
LORA_BYPASSED = {"wavlm": ("q_proj", "k_proj", "v_proj", "out_proj")}


def encoder_lora_targets(config: PreTrainedConfig, requested: list[str] | None) -> list[str]:
    """The encoder modules to adapt: the request, or the family's default (attention q,k; WavLM: feed-forward)."""
    bypassed = LORA_BYPASSED.get(config.model_type, ())
    if requested is None:
        return ["feed_forward.intermediate_dense", "feed_forward.output_dense"] if bypassed else ["q_proj", "k_proj"]
    useless = [t for t in requested if t.split(".")[-1] in bypassed]
    if useless:
        raise ValueError(
            f"LoRA on {', '.join(useless)} would have no effect in a {config.model_type} encoder (its attention "
            "reads those weights directly); target feed_forward.intermediate_dense,feed_forward.output_dense instead"
        )
    return list(requested)


def is_whisper(config: PreTrainedConfig) -> bool:
    """True for Whisper-style (log-mel input) encoders."""
    return config.model_type in ("whisper",)


def feature_length(config: PreTrainedConfig, num_samples: int) -> int:
    """Length of the feature-extractor output for `num_samples` of audio (mel frames or samples)."""
    return num_samples // WHISPER_HOP_LENGTH if is_whisper(config) else num_samples


def encoder_output_length(config: PreTrainedConfig, feature_lengths: torch.Tensor | int) -> torch.Tensor | int:
    """Number of encoder frames for the given feature lengths (follows the encoder's conv stack)."""
    lengths = feature_lengths
    if is_whisper(config):
        return (lengths - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        lengths = (lengths - kernel) // stride + 1
    return lengths


def audio_tower_from_config(config: PreTrainedConfig) -> nn.Module:
    """Build the encoder with random weights (or on the meta device) from its config alone."""
    if is_whisper(config):
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    return AutoModel.from_config(config)


def load_audio_tower(model_id: str, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a pretrained encoder from a hub id, local folder or backbone name (encoder only, heads dropped)."""
    model_id = resolve(model_id)
    config = AutoConfig.from_pretrained(model_id)
    if is_whisper(config):
        from transformers import WhisperModel

        # Whisper checkpoints hold encoder and decoder; load the pair and keep the encoder.
        return WhisperModel.from_pretrained(model_id, dtype=dtype).get_encoder()
    # For HuBERT/Wav2Vec2 CTC checkpoints AutoModel strips the CTC head and keeps the base model.
    return AutoModel.from_pretrained(model_id, dtype=dtype)


def _whisper_forward(
    tower: nn.Module, features: torch.Tensor, lengths: torch.Tensor, upto: int | None = None
) -> torch.Tensor:
    """Whisper encoder on the real length: B, M, F mels -> B, ceil(F/2), C frames; padded frames masked.
    With `upto`, only the first `upto` layers run and the hidden states before the final norm come back."""
    max_positions = tower.embed_positions.num_embeddings
    frame_mask = torch.arange(features.shape[-1], device=features.device)[None] < lengths[:, None]  # B, F
    # Zero the padding between the convolutions so the last real frames see the same zeros as an unpadded clip.
    x = features * frame_mask[:, None, :].to(features.dtype)
    x = nn.functional.gelu(tower.conv1(x)) * frame_mask[:, None, :].to(features.dtype)  # B, C, F
    x = nn.functional.gelu(tower.conv2(x)).permute(0, 2, 1)  # B, F/2, C
    t = x.shape[1]
    if t > max_positions:
        raise ValueError(
            f"The Whisper encoder takes at most {max_positions / 50:.0f} s of audio at once, got {t / 50:.1f} s; "
            "split long audio into chunks (chunk_length_s)."
        )
    x = x + tower.embed_positions.weight[:t].to(x.dtype)
    x = nn.functional.dropout(x, p=tower.dropout, training=tower.training)
    out_lengths = encoder_output_length(tower.config, lengths)
    if upto is not None:
        return _whisper_layers(tower, x, out_lengths, 0, upto)
    return tower.layer_norm(_whisper_layers(tower, x, out_lengths, 0, len(tower.layers)))


def _whisper_layers(tower: nn.Module, x: torch.Tensor, lengths: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Whisper encoder layers start..stop-1 on hidden states B, T, C; frames past each clip's length masked."""
    valid = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
    attention_mask = create_bidirectional_mask(config=tower.config, inputs_embeds=x, attention_mask=valid)
    for layer in tower.layers[start:stop]:
        x = layer(x, attention_mask)
    return x


def encode_audio(
    tower: nn.Module, features: torch.Tensor, feature_lengths: torch.Tensor, upto: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the audio tower on a padded batch. Returns frames B, T, C and the valid frame count per item.
    `upto` (Whisper only) stops after that many transformer layers, for `encode_top` to finish."""
    config = tower.config
    out_lengths = encoder_output_length(config, feature_lengths)
    if is_whisper(config):
        return _whisper_forward(tower, features, feature_lengths, upto), out_lengths
    if upto is not None:
        raise ValueError(f"running the encoder in two parts needs a Whisper encoder, not {config.model_type}")
    if getattr(config, "feat_extract_norm", "layer") == "group":
        # Group-norm feature encoders (wav2vec2-base style) normalise over the padded time axis, so padding
        # changes their output; run each clip alone at its real length to stay exact.
        frames = [tower(features[i : i + 1, : int(n)]).last_hidden_state[0] for i, n in enumerate(feature_lengths)]
        return nn.utils.rnn.pad_sequence(frames, batch_first=True), out_lengths
    mask = torch.arange(features.shape[-1], device=features.device)[None] < feature_lengths[:, None]
    return tower(features, attention_mask=mask.long()).last_hidden_state, out_lengths


def encode_top(tower: nn.Module, hidden: torch.Tensor, frame_lengths: torch.Tensor, start: int) -> torch.Tensor:
    """Finish a Whisper encoder run from the hidden states B, T, C after its first `start` layers
    (`encode_audio(..., upto=start)`): the layers above and the final norm."""
    return tower.layer_norm(_whisper_layers(tower, hidden, frame_lengths, start, len(tower.layers)))


class EncoderTop(nn.Module):
    """A copy of a Whisper encoder's top `count` layers and its final norm, to be fine-tuned apart from the tower
    (the CTC head's own, see tiny_audio/ctc.py): it reads the tower's hidden states below those layers, which
    `encode_audio(..., upto=start)` gives once for both, so only the copied layers run twice."""

    def __init__(self, config: PreTrainedConfig, count: int):
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

        if not is_whisper(config):
            raise ValueError(f"a copy of the encoder's top layers needs a Whisper encoder, not {config.model_type}")
        if not 0 < count <= config.encoder_layers:
            raise ValueError(f"the encoder has {config.encoder_layers} layers; cannot copy the top {count}")
        self.config = config
        self.start = config.encoder_layers - count  # the tower layer whose input this reads
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(count))
        self.layer_norm = nn.LayerNorm(config.d_model)

    @classmethod
    def from_tower(cls, tower: nn.Module, count: int) -> EncoderTop:
        """The top `count` layers and final norm of `tower`, copied (same weights, float32, trainable); a tower
        with LoRA gives its layers with the adapters folded in, as they run."""
        from .lora import merged_state_dict

        top = cls(tower.config, count)
        state = merged_state_dict(tower)
        renamed = {"layer_norm.weight": "layer_norm.weight", "layer_norm.bias": "layer_norm.bias"}
        for i in range(count):
            prefix = f"layers.{top.start + i}."
            renamed.update({k: f"layers.{i}.{k[len(prefix) :]}" for k in state if k.startswith(prefix)})
        top.load_state_dict({new: state[old] for old, new in renamed.items()})
        return top.float().requires_grad_(True)

    def forward(self, hidden: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states B, T, C after the tower's first `start` layers -> this copy's output frames B, T, C."""
        return self.layer_norm(_whisper_layers(self, hidden, frame_lengths, 0, len(self.layers)))


_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The transformer layer a parameter of the tower belongs to (its name holds `layers.N.`), or None."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def frozen_layers_below(tower: nn.Module) -> int | None:
    """For a Whisper encoder whose trainable parameters all lie in its transformer layers: the index of the lowest
    layer that trains (everything below is frozen, so its output can be cached). None when the tower is frozen,
    is not Whisper, or trains something outside its layers."""
    trained = [name for name, p in tower.named_parameters() if p.requires_grad]
    if not trained or not is_whisper(tower.config):
        return None
    indices = [layer_index(name) for name in trained]
    if None in indices:
        return None
    return min(indices)
