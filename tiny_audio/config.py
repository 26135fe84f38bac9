"""ASRConfig: everything needed to rebuild an ASRModel (backbones, projector, LoRA, prompts, generation).

Saved as config.json next to the weights and read back as is. Generation defaults live in one dict because
transformers refuses to save generation parameters as top-level config fields.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Defaults of the reference design (see SYSTEM.md): HuBERT-XLarge encoder LoRA on q,k; Qwen3 decoder LoRA on q,v.
DEFAULT_GENERATION = {
    "max_new_tokens": 128,
    # Guard against run-on output: at most this many new tokens per second of audio (+ 8), below max_new_tokens.
    # Read speech is 2-5 words (3-7 tokens) a second; None switches the guard off.
    "max_new_tokens_per_second": 10.0,
    "num_beams": 1,
    "do_sample": False,
    "temperature": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "ctc_head_weight": 0.0,  # joint decoding with the CTC head (when the model has one); 0: the LLM alone
    # Whether the CTC head's spaces count in joint decoding; False: it checks the letters, the LLM places the spaces.
    "ctc_word_gaps": True,
    # Joint decoding's cost for each word that leaves the model's lexicon (lexicon.txt), if it has one; 0: none.
    "ctc_lexicon_penalty": 0.0,
    # Beam search only: pick among the beam's finished hypotheses by beam score + this x log P(text) under the
    # decoder's LLM without its LoRA (ASRModel._rescored); 0: the beam's own best.
    "lm_rescore_weight": 0.0,
    # Beam search with the CTC head: its weight when the finished hypotheses are ranked again (with or without the
    # LLM prior above); None: the search's own ctc_head_weight.
    "ctc_rescore_weight": None,
    # Beam search only: a hypothesis whose words so far (case and punctuation aside) another has with a better score
    # ends, leaving its place to another reading (HypothesisScores).
    "beam_distinct": False,
}


class ASRConfig(PreTrainedConfig):
    """Configuration of an audio encoder -> projector -> causal LM speech recognizer."""

    model_type = "tiny_audio"
    # Nested backbone configs are kept so a model can be built from configs alone (random or meta weights).
    sub_configs_defaults = {
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="whisper", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3", optional=True),
    }

    # Backbones: a Hugging Face hub id or a local folder each; None builds from the nested config instead.
    audio_model_id: str | None = None
    text_model_id: str | None = None
    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    # True when the saved folder holds the full backbone weights, so loading needs neither id nor network.
    base_weights_included: bool = False

    # Projector: stack K encoder frames, RMSNorm -> SwiGLU MLP -> RMSNorm.
    projector_stack_size: int = 5  # K: 50 Hz encoder frames -> 10 Hz LLM positions
    projector_hidden_dim: int = 2048  # H: SwiGLU hidden width (the seed uses 8192)
    projector_norm: bool = True  # pre- and post-RMSNorm around the MLP
    projector_norm_eps: float = 1e-6
    projector_dropout: float = 0.0

    # LoRA per side; rank 0 means frozen, no adapter.
    encoder_lora_rank: int = 16
    encoder_lora_alpha: int = 16
    encoder_lora_dropout: float = 0.0
    encoder_lora_target_modules: list[str] | None = None  # None -> the family's default (encoder.py), q,k mostly
    # Only these encoder layers (0 = the lowest) get adapters; None: all. With Whisper's top layers only (e.g. [4, 5]
    # of whisper-base), training reads the frozen layers' output from the feature cache and runs just the top ones.
    encoder_lora_layers: list[int] | None = None
    decoder_lora_rank: int = 8
    decoder_lora_alpha: int = 32
    decoder_lora_dropout: float = 0.0
    decoder_lora_target_modules: list[str] | None = None  # None -> ["q_proj", "v_proj"]

    # Character CTC head on the encoder frames for joint CTC / LLM decoding (tiny_audio/ctc.py): its hidden width,
    # 0 for none. Trained after the rest (`tiny-audio ctc-head`); generation_defaults["ctc_head_weight"] turns it on.
    ctc_head_dim: int = 0
    ctc_head_layers: int = 0  # Transformer layers after its convolutions (0: convolutions only)
    # The head's own fine-tuned copy of the (Whisper) encoder's top layers, 0: none, it reads the encoder's output.
    ctc_head_encoder_layers: int = 0

    # Prompt: the audio placeholder in user_prompt is expanded to one token per projected frame.
    system_prompt: str = ""
    user_prompt: str = "Transcribe: <audio>"
    audio_token: str = "<audio>"
    audio_token_id: int | None = None  # set when the processor adds the token to the tokenizer

    sample_rate: int = 16000
    # Generation defaults (max_new_tokens, num_beams, do_sample, temperature, repetition_penalty, ...).
    generation_defaults: dict | None = None
    # Long-audio defaults used by the pipeline.
    chunk_length_s: float = 30.0
    stride_length_s: list[float] | None = None  # None -> [5.0, 5.0]

    def __post_init__(self, **kwargs):
        if self.decoder_lora_target_modules is None:
            self.decoder_lora_target_modules = ["q_proj", "v_proj"]
        self.generation_defaults = {**DEFAULT_GENERATION, **(self.generation_defaults or {})}
        if self.stride_length_s is None:
            self.stride_length_s = [5.0, 5.0]
        super().__post_init__(**kwargs)
        if self.projector_stack_size < 1:
            raise ValueError(f"projector_stack_size must be >= 1, got {self.projector_stack_size}")
        if self.audio_token not in self.user_prompt:
            raise ValueError(
                f"user_prompt must contain the audio placeholder {self.audio_token!r}: {self.user_prompt!r}"
            )


__all__ = ["ASRConfig", "DEFAULT_GENERATION"]
