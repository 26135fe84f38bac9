"""ASRModel: audio_tower -> projector -> language_model, as a transformers PreTrainedModel.

The audio placeholder in the prompt is expanded (by ASRProcessor) to one token per projected frame; here those
positions are filled with the projected frames by masked_scatter. Only the projector and LoRA weights are trained
and, by default, saved; the backbones are loaded again from the ids (hub or folder) named in the config.

Shapes: B batch, L prompt tokens, T encoder frames, C encoder width, N projected frames of a clip, D LLM width.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import logging as hf_logging

from .backbones import NAMED, backbone_config, resolve
from .config import ASRConfig
from .ctc import LEXICON_NAME, CTCHead, CTCPrefixScorer, Lexicon, token_spellings
from .encoder import (
    EncoderTop,
    audio_tower_from_config,
    encode_audio,
    encode_top,
    encoder_lora_targets,
    load_audio_tower,
)
from .lora import apply_lora, lora_state_dict, merged_state_dict
from .processor import ASRProcessor
from .projector import Projector

WEIGHTS_NAME = "model.safetensors"
PIPELINE_TASK = "automatic-speech-recognition"
COMPONENTS = ("audio_tower", "projector", "language_model")
PRECISIONS = ("float32", "bfloat16", "int8")
CTC_TEMPERATURE = 0.05  # see ASRModel._ctc_alignment_loss


def _unadapted_copy(model: nn.Module, folded: bool = True) -> nn.Module:
    """The base model of a LoRA-wrapped PeftModel as a module of its own, sharing every tensor with `model` except,
    if the adapters are about to be folded in (`folded`), the adapted layers' weights: those are then the only
    ones that differ (a few MB for SmolLM2's q_proj and v_proj, against 540 MB for a whole copy). Unfolded, it
    shares them all and costs nothing, and unlike switching the adapters off it leaves `model` as it is for any
    other thread decoding with it."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = [name for name, m in base.named_modules() if isinstance(m, LoraLayer)]
    own = (
        {id(p) for name in adapted for p in base.get_submodule(name).get_base_layer().parameters()} if folded else set()
    )
    shared = {id(t): t for t in (*base.parameters(), *base.buffers()) if id(t) not in own}
    unadapted = copy.deepcopy(base, memo=shared)  # the shared tensors are taken as they are, the rest copied
    for name in adapted:  # each adapter wrapper gives way to its (copied or shared) base layer
        unadapted.set_submodule(name, unadapted.get_submodule(name).get_base_layer())
    return unadapted


@torch.no_grad()
def text_log_probs(lm: nn.Module, tokenizer: Any, texts: list[str], batch_size: int = 8) -> list[float]:
    """log P(text) under a causal LM, from the tokenizer's beginning token (where it has one); the end of the text
    is not scored, an empty text scores 0."""
    start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = lm.get_input_embeddings().weight.device
    out = []
    for i in range(0, len(texts), batch_size):
        rows = [start + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[i : i + batch_size]]
        width = max(2, max(len(r) for r in rows))
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        # Small batches, and no log_softmax copy of the logits: they are batch x tokens x 49k floats, 150 MB for 8
        # texts of a 30 s window (batches of 32 had doubled the peak memory of a long file).
        logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        picked = logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        out += (picked * mask[:, 1:]).sum(-1).tolist()
    return out


def _contiguous_lm_head_input(language_model: nn.Module) -> None:
    """Hand the LM head a contiguous input. At generation's first step the head gets the last position of each
    row, a strided slice [batch, 1, dim]; with a frozen weight, torch's matmul then copies the whole weight once per
    row and multiplies batch by batch: 0.7 s per batch of 8 for SmolLM2's 49,152 x 576 head on a CPU, instead of
    4 ms after a copy of the few input values."""
    head = language_model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


@contextmanager
def _quiet_loading():
    """Backbones load in about a second; transformers' per-tensor "Loading weights" bar is only noise on stderr."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class ASRModel(PreTrainedModel):
    """Speech recognizer: any transformers audio encoder + a trainable projector + any causal LM."""

    config_class = ASRConfig
    base_model_prefix = "tiny_audio"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: ASRConfig, load_backbones: bool = True, dtype: torch.dtype | None = None):
        """Build the model. With `load_backbones`, backbones named by id/folder load pretrained weights;
        otherwise (or without ids) they are built from the nested configs with random weights."""
        super().__init__(config)
        pretrained = load_backbones and not config.base_weights_included
        dtype = dtype or torch.float32

        # audio_tower: frozen encoder (LoRA may be added below)
        if pretrained and config.audio_model_id:
            with _quiet_loading():
                self.audio_tower = load_audio_tower(config.audio_model_id, dtype=dtype)
            config.audio_config = self.audio_tower.config
        elif config.audio_config is not None:
            self.audio_tower = audio_tower_from_config(config.audio_config)
        else:
            raise ValueError("ASRConfig needs audio_model_id (hub id or folder) or audio_config")

        # language_model: frozen causal LM (LoRA may be added below)
        if pretrained and config.text_model_id:
            with _quiet_loading():
                language_model = AutoModelForCausalLM.from_pretrained(resolve(config.text_model_id), dtype=dtype)
            config.text_config = language_model.config
        elif config.text_config is not None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        else:
            raise ValueError("ASRConfig needs text_model_id (hub id or folder) or text_config")

        self.projector = Projector(
            encoder_dim=config.audio_config.hidden_size,
            llm_dim=config.text_config.hidden_size,
            stack_size=config.projector_stack_size,
            hidden_dim=config.projector_hidden_dim,
            norm=config.projector_norm,
            norm_eps=config.projector_norm_eps,
            dropout=config.projector_dropout,
        )
        if config.projector_norm and pretrained and config.text_model_id:
            # Start the audio embeddings at the scale of the LLM's own token embeddings (SmolLM2-135M: RMS 0.13),
            # not RMSNorm's 1.0. Seven times too large, they swamp the residual stream at the audio positions, and
            # the norm's weight barely moves in training (it stayed at 1.00 for 300 steps at lr 1e-3).
            with torch.no_grad():
                table = language_model.get_input_embeddings().weight
                self.projector.norm_post.weight.fill_(float(table.float().pow(2).mean(-1).sqrt().mean()))
        self.audio_tower.requires_grad_(False)
        language_model.requires_grad_(False)
        _contiguous_lm_head_input(language_model)
        config.encoder_lora_target_modules = encoder_lora_targets(
            config.audio_config, config.encoder_lora_target_modules
        )
        layer_count = config.audio_config.num_hidden_layers
        outside = [i for i in config.encoder_lora_layers or [] if not 0 <= i < layer_count]
        if outside:
            raise ValueError(f"encoder_lora_layers {outside}: the encoder has layers 0 to {layer_count - 1}")
        self.audio_tower = apply_lora(
            self.audio_tower,
            config.encoder_lora_rank,
            config.encoder_lora_alpha,
            config.encoder_lora_dropout,
            config.encoder_lora_target_modules,
            layers=config.encoder_lora_layers,
        )
        self.language_model = apply_lora(
            language_model,
            config.decoder_lora_rank,
            config.decoder_lora_alpha,
            config.decoder_lora_dropout,
            config.decoder_lora_target_modules,
            task_type="CAUSAL_LM",
        )
        self.ctc_head = (
            CTCHead(
                config.audio_config.hidden_size,
                config.ctc_head_dim,
                layers=config.ctc_head_layers,
                encoder_top=EncoderTop(config.audio_config, config.ctc_head_encoder_layers)
                if config.ctc_head_encoder_layers
                else None,
            )
            if config.ctc_head_dim
            else None
        )
        self._processor: ASRProcessor | None = None
        # The LLM without LoRA, for rescoring, once for_inference has folded LoRA in. Held in a list, so that it
        # is no submodule: never saved, counted or listed with the model's own modules.
        self._unadapted: list[nn.Module] = []
        self._spellings: tuple[Any, list[list[int] | None]] | None = None  # (tokenizer, its tokens, spelled)
        self.lexicon: Lexicon | None = None  # known words for joint decoding (ctc_lexicon_penalty), from lexicon.txt
        # Training only (set by the trainer, never saved): weight of the CTC alignment loss on the projected frames
        # (see _ctc_alignment_loss); 0 switches it off.
        self.ctc_weight = 0.0
        self.ctc_blank_id = 0  # a token no transcript contains (the trainer sets it from training.ctc_blank_token)
        self.last_ctc_loss: float | None = None  # of the last training batch, when the CTC loss is on
        # Training only (set by the trainer): audio_frames given to forward are the encoder's hidden states after
        # this many layers (a feature cache below the layers that train), and the layers above run here; None:
        # audio_frames are the encoder's output.
        self.audio_frames_layer: int | None = None
        self.post_init()

    def init_weights(self) -> None:
        """Nothing to do: the backbones arrive initialised (pretrained or by their own constructors) and the
        projector initialises itself. transformers' default would re-initialise and re-tie the loaded backbones."""

    def train(self, mode: bool = True) -> ASRModel:
        """Training mode for what trains; a frozen audio tower stays in eval mode, so its dropout and built-in
        SpecAugment (HuBERT/Wav2Vec2 configs enable it) never change the frames it gives, which then match
        inference and the feature cache."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.audio_tower.parameters()):
            self.audio_tower.eval()
        return self

    # ------------------------------------------------------------------------------------------- processor
    @property
    def processor(self) -> ASRProcessor:
        """The matching ASRProcessor (built from the backbones on first use, or loaded with the model)."""
        if self._processor is None:
            self._processor = ASRProcessor.from_config(self.config)
        return self._processor

    @processor.setter
    def processor(self, value: ASRProcessor) -> None:
        self._processor = value

    # --------------------------------------------------------------------------------------------- forward
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def encode_audio(
        self,
        input_features: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        audio_frames: torch.Tensor | None = None,
        audio_frame_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode (or take precomputed encoder frames B, T, C with their lengths) and project a padded batch;
        returns the valid projected frames of all clips in batch order, shape sum(N), D."""
        return self._project_audio(input_features, audio_attention_mask, audio_frames, audio_frame_lengths)[0]

    def _project_audio(
        self,
        input_features: torch.Tensor | None,
        audio_attention_mask: torch.Tensor | None,
        audio_frames: torch.Tensor | None,
        audio_frame_lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected frames sum(N), D and the count N per clip."""
        param = next(self.projector.parameters())
        if audio_frames is None:
            if input_features is None or audio_attention_mask is None:
                raise ValueError("give input_features with audio_attention_mask, or audio_frames with their lengths")
            feature_lengths = audio_attention_mask.sum(-1)
            frames, frame_lengths = encode_audio(self.audio_tower, input_features.to(param.dtype), feature_lengths)
        else:
            frames, frame_lengths = audio_frames.to(param.dtype), audio_frame_lengths
            if self.audio_frames_layer is not None:
                frames = encode_top(self.audio_tower, frames, frame_lengths, self.audio_frames_layer)
        # Zero frames past each clip's end so the last stack of K frames equals that of the clip alone.
        valid = torch.arange(frames.shape[1], device=frames.device)[None] < frame_lengths[:, None]  # B, T
        frames = frames * valid[..., None].to(frames.dtype)
        projected = self.projector(frames)  # B, ceil(T/K), D
        counts = self.projector.output_length(frame_lengths)  # B
        keep = torch.arange(projected.shape[1], device=frames.device)[None] < counts[:, None]
        return projected[keep], counts  # sum(N), D and B

    def _embed(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        audio_frames: torch.Tensor | None = None,
        audio_frame_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token embeddings with the audio placeholder positions filled by projected frames (B, L, D), and the
        projected frames themselves with their count per clip (sum(N), D and B)."""
        audio_embeds, counts = self._project_audio(
            input_features, audio_attention_mask, audio_frames, audio_frame_lengths
        )
        audio_mask = input_ids == self.config.audio_token_id  # B, L
        per_clip = audio_mask.sum(-1)
        if per_clip.shape != counts.shape or not torch.equal(per_clip, counts):
            raise ValueError(
                f"audio placeholder tokens per clip {per_clip.tolist()} do not match the projected audio frames "
                f"{counts.tolist()}; build inputs with ASRProcessor so the placeholder "
                f"{self.config.audio_token!r} is expanded to the clip's length"
            )
        # The placeholder id may lie past the embedding table; look up a harmless id and overwrite it.
        embeds = self.get_input_embeddings()(input_ids.masked_fill(audio_mask, 0))  # B, L, D
        embeds = embeds.masked_scatter(audio_mask[..., None].expand_as(embeds), audio_embeds.to(embeds.dtype))
        return embeds, audio_embeds, counts

    def forward(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        audio_frames: torch.Tensor | None = None,
        audio_frame_lengths: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Logits for a processed batch, B x L x V; with `labels`, the loss on the transcript tokens and the logits
        of only the positions that predict one (B x P x V, P spanning those positions over the batch). Cached
        encoder frames (`audio_frames`, `audio_frame_lengths`) can stand in for the audio features."""
        inputs_embeds, audio_embeds, counts = self._embed(
            input_ids,
            input_features=input_features,
            audio_attention_mask=audio_attention_mask,
            audio_frames=audio_frames,
            audio_frame_lengths=audio_frame_lengths,
        )
        num_items = kwargs.pop("num_items_in_batch", None)  # the Trainer's token count over accumulated batches
        if labels is None:
            return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        # Only transcript tokens carry loss, so the LM head runs only at the positions before them: about a quarter
        # of a 10 s clip's prompt + audio + transcript, and the head (49k x 576 for SmolLM2) is a small decoder's
        # largest matmul. Same loss; x1.15 per CPU training step of the default model (benchmarks/train_step.py).
        targets = labels[:, 1:]  # position p predicts token p + 1
        keep = (targets != -100).any(0).nonzero().squeeze(-1)  # P
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=keep, **kwargs
        )
        loss = nn.functional.cross_entropy(
            out.logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=-100, reduction="sum"
        )
        out.loss = loss / (num_items if num_items is not None else (targets != -100).sum().clamp(min=1))
        if self.training and self.ctc_weight > 0:
            ctc_loss = self._ctc_alignment_loss(audio_embeds, counts, labels)
            out.loss = out.loss + self.ctc_weight * ctc_loss
            # Kept here for the trainer's log: mixed-precision wrappers rebuild the output and drop extra fields.
            self.last_ctc_loss = float(ctc_loss.detach())
        return out

    def _ctc_alignment_loss(self, audio_embeds: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor):
        """CTC loss of the transcript tokens read straight off the projected frames, scored against the LLM's own
        (frozen) token embeddings: frame n's logits are the cosine similarities of the frame to every embedding row.

        It asks each frame to resemble the token spoken there, or the blank, so the audio reaches the LLM as
        something close to text it already reads; the language-model loss alone lets the decoder guess from context
        where the audio is unclear (LLM-based ASR trained on a few hours of speech paraphrases). The blank is a token
        no transcript contains (`ctc_blank_id`, the trainer's `training.ctc_blank_token`)."""
        table = nn.functional.normalize(self.get_input_embeddings().weight.detach().float(), dim=-1)  # V, D
        frames = nn.functional.normalize(audio_embeds.float(), dim=-1)  # sum(N), D
        # Cosines lie in [-1, 1]; at temperature 0.05 a frame at cosine 0.9 to its token and 0.1 to the rest
        # gives it ~99% of the probability among SmolLM2's 49k rows (at 0.1 it could not pass ~6%).
        log_probs = (frames @ table.T / CTC_TEMPERATURE).log_softmax(-1)  # sum(N), V
        log_probs = nn.utils.rnn.pad_sequence(list(log_probs.split(counts.tolist())))  # max N, B, V
        eos = self.processor.eos_token_id
        targets = [row[(row != -100) & (row != eos)] for row in labels]  # the transcript, without end of turn
        target_lengths = torch.tensor([len(t) for t in targets])
        loss = nn.functional.ctc_loss(
            log_probs,
            torch.cat(targets),
            counts.cpu(),
            target_lengths,
            blank=self.ctc_blank_id,
            reduction="sum",
            zero_infinity=True,  # a clip with more tokens than frames cannot align; it adds nothing, not inf
        )
        return loss / target_lengths.sum().clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor,
        audio_attention_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate transcript token ids (new tokens only) for a left-padded batch, with the KV cache. With a beam
        and `return_hypotheses=True`, every finished hypothesis with its scores instead (Hypotheses)."""
        options = {**self.config.generation_defaults, **generate_kwargs}
        head_weight = float(options.pop("ctc_head_weight", 0.0) or 0.0)
        word_gaps = bool(options.pop("ctc_word_gaps", True))
        lexicon_penalty = float(options.pop("ctc_lexicon_penalty", 0.0) or 0.0)
        ctc_rescore = options.pop("ctc_rescore_weight", None)
        scorer = None
        if head_weight and self.ctc_head is not None:
            if lexicon_penalty and self.lexicon is None:
                raise ValueError("ctc_lexicon_penalty needs a lexicon: this model has no lexicon.txt")
            # The encoder runs once: its frames feed both the projector and the CTC head.
            dtype = next(self.projector.parameters()).dtype
            features, feature_lengths = input_features.to(dtype), audio_attention_mask.sum(-1)
            if self.ctc_head.top is None:
                frames, lengths = encode_audio(self.audio_tower, features, feature_lengths)
                head_input = frames
            else:  # the layers below the head's own copy of the top ones run once for both
                start = self.ctc_head.top.start
                head_input, lengths = encode_audio(self.audio_tower, features, feature_lengths, upto=start)
                frames = encode_top(self.audio_tower, head_input, lengths, start)
            inputs_embeds = self._embed(input_ids, audio_frames=frames, audio_frame_lengths=lengths)[0]
            scorer = CTCPrefixScorer(
                self.ctc_head.padded_log_probs(head_input, lengths),
                self._token_spellings(),
                self.processor.eos_token_id,
                head_weight,
                num_beams=int(options.get("num_beams") or 1),
                word_gaps=word_gaps,
                lexicon=self.lexicon,
                lexicon_penalty=lexicon_penalty,
            )
            options["logits_processor"] = LogitsProcessorList([*options.get("logits_processor", []), scorer])
        else:
            inputs_embeds = self._embed(
                input_ids, input_features=input_features, audio_attention_mask=audio_attention_mask
            )[0]
        per_second = options.pop("max_new_tokens_per_second", None)
        if per_second:
            # Each audio position covers stack_size encoder frames of 20 ms (Whisper, wav2vec2, HuBERT alike).
            seconds = (input_ids == self.config.audio_token_id).sum(-1) * self.config.projector_stack_size * 0.02
            limits = torch.ceil(per_second * seconds).long() + 8
            if options.get("max_new_tokens"):
                limits = limits.clamp(max=options["max_new_tokens"])
            options["max_new_tokens"] = int(limits.max())
            if len(limits) > 1 and options.get("num_beams", 1) == 1:  # each row stops at its own limit
                options["stopping_criteria"] = StoppingCriteriaList(
                    [*options.get("stopping_criteria", []), _RowLimits(limits)]
                )
        ilm_weight = float(options.pop("ilm_weight", 0.0) or 0.0)
        if ilm_weight:
            options["logits_processor"] = LogitsProcessorList(
                [*options.get("logits_processor", []), self._internal_lm(input_ids, attention_mask, ilm_weight)]
            )
        if not options.get("do_sample"):
            options.pop("temperature", None)  # only meaningful when sampling; avoids a warning
        if options.get("num_beams", 1) > 1:
            # Otherwise beam search goes on, after num_beams hypotheses have ended, while a longer one could still
            # score better: slower, and it can loop (benchmarks/beam_stop.py).
            options.setdefault("early_stopping", True)
        if self._processor is not None:
            options.setdefault("eos_token_id", self._processor.eos_token_id)
            options.setdefault("pad_token_id", self._processor.tokenizer.pad_token_id)
        vocab = self.get_input_embeddings().num_embeddings
        if self.config.audio_token_id is not None and self.config.audio_token_id < vocab:
            options.setdefault("suppress_tokens", [self.config.audio_token_id])
        options.setdefault("use_cache", True)  # the KV cache: each new token attends to stored keys and values
        beams = int(options.get("num_beams") or 1)
        if beams > 1 and options["use_cache"] and options.get("cache") is None and inputs_embeds.shape[1] > 1:
            options["cache"] = self._shared_prefill(inputs_embeds, attention_mask, beams)
        rescore = float(options.pop("lm_rescore_weight", 0.0) or 0.0)
        # The CTC head's weight when the finished hypotheses are ranked again, if not the search's own.
        ctc_shift = float(ctc_rescore) - head_weight if scorer is not None and ctc_rescore is not None else 0.0
        every = bool(options.pop("return_hypotheses", False))
        distinct = self._words_of if options.pop("beam_distinct", False) and beams > 1 else None
        # Rescoring needs every beam's hypothesis; a caller asking for them (or for generate's full output) gets
        # the beam's own ranking.
        rescoring = (
            (rescore or ctc_shift or every)
            and beams > 1
            and not options.get("return_dict_in_generate")
            and not options.get("num_return_sequences")
        )
        sums = None
        if rescoring or distinct is not None:
            eos = options.get("eos_token_id", self.language_model.generation_config.eos_token_id)
            sums = HypothesisScores(beams, eos, distinct)
            options["logits_processor"] = LogitsProcessorList([*options.get("logits_processor", []), sums])
        if rescoring:
            sequences = self.language_model.generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, num_return_sequences=beams, **options
            )
            totals = sums.of(sequences)
            if every:
                ctc = scorer.scores_of(sequences) if scorer is not None else None
                return Hypotheses(sequences, totals, ctc, head_weight if scorer is not None else 0.0)
            if ctc_shift:
                totals += ctc_shift * scorer.scores_of(sequences)
            return self._rescored(sequences, totals, beams, rescore)
        return self.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **options)

    def _words_of(self, tokens: list[int]) -> str:
        """A hypothesis's words so far, as WER reads them: lower case, punctuation a space (beam_distinct)."""
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True).lower()
        return " ".join(re.sub(r"[^\w']+", " ", text).split())

    def _rescored(self, sequences: torch.Tensor, totals: torch.Tensor, beams: int, weight: float) -> torch.Tensor:
        """Each clip's best finished hypothesis by `totals` (what the beam summed for each, see HypothesisScores,
        its CTC part reweighted where `ctc_rescore_weight` asks) + `weight` x log P(text) under the decoder's LLM
        without its LoRA (rows: beams per clip, best first).

        Training on a few hours of transcripts leaves the decoder a weaker judge of plain English than the LLM it
        came from, whose prior then sorts out inflections and word splits the beam ranks wrongly ("relieve" for
        "relief", "para graph"); and once the hypotheses are finished, the CTC head's check of their letters can
        weigh more than the search could give it (benchmarks/lm_rescore.py)."""
        total = totals.double()
        if weight:
            texts = self.processor.batch_decode(sequences)
            unique = list(dict.fromkeys(texts))
            prior = dict(zip(unique, self.text_log_probs(unique), strict=True))
            total += weight * torch.tensor([prior[t] for t in texts], dtype=torch.float64)
        best = total.view(-1, beams).argmax(-1) + torch.arange(len(total) // beams) * beams
        return sequences[best.to(sequences.device)]

    def text_log_probs(self, texts: list[str]) -> list[float]:
        """log P(text) under the decoder's LLM without its LoRA (see the module's text_log_probs)."""
        return text_log_probs(self._base_language_model(), self.processor.tokenizer, texts)

    def _base_language_model(self) -> nn.Module:
        """The decoder's LLM as it was before LoRA: the copy `for_inference` keeps when it folds the adapters in,
        or else one made for the call that shares every tensor (the adapters of `self` are never switched off,
        as another thread may be decoding with them)."""
        from peft import PeftModel

        if self._unadapted:
            return self._unadapted[0]
        if isinstance(self.language_model, PeftModel):
            return _unadapted_copy(self.language_model, folded=False).eval()
        return self.language_model

    def _shared_prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, beams: int):
        """The KV cache of all but the last prompt position, computed once per clip and repeated for each beam.
        Beam search would run the prefill over num_beams identical copies of each clip, and the prefill (prompt
        and audio, ~150 positions for 10 s) is a large part of decoding time on a CPU; generate() then computes
        only the last position. Positions are counted as generate() counts them, past the left padding."""
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = DynamicCache(config=self.language_model.config)
        self.language_model(
            inputs_embeds=inputs_embeds[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, :-1],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(beams)
        return cache

    def _token_spellings(self) -> list[list[int] | None]:
        tokenizer = self.processor.tokenizer
        if self._spellings is None or self._spellings[0] is not tokenizer:
            self._spellings = (tokenizer, token_spellings(tokenizer))
        return self._spellings[1]

    def _internal_lm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, weight: float):
        """The decoder's own text prior for this batch: the prompt with its audio positions taken out."""
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        texts = [row[(row != self.config.audio_token_id) & keep] for row, keep in zip(input_ids, mask, strict=True)]
        if any(not torch.equal(text, texts[0]) for text in texts):
            raise ValueError("internal-LM subtraction needs the same text prompt on every row of a batch")
        return _InternalLMSubtraction(self.language_model, texts[0][None], weight)

    def for_inference(self, precision: str = "float32") -> ASRModel:
        """Ready for transcription only: LoRA folded into the base weights (no extra matmuls per layer: ~10%
        faster), eval mode, and the CPU precision: float32 (as trained), bfloat16 (x1.6 in batches of 8 where the
        CPU has bf16 matrix units, AMX or AVX512-BF16, slower elsewhere; dev WER a point or two higher) or int8 (dynamic
        quantization: every Linear layer's weights stored int8, activations quantized per batch on the fly).
        SmolLM2's activations have outlier channels that per-tensor activation scales cannot hold: int8 doubles
        the default model's WER, also with per-channel weight scales, so bfloat16 is the fast option."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        from peft import PeftModel

        for name in COMPONENTS:
            module = getattr(self, name)
            if isinstance(module, PeftModel):
                if name == "language_model":
                    self._unadapted[:] = [_unadapted_copy(module).eval()]
                setattr(self, name, module.merge_and_unload())
        if precision == "int8":
            from torch.ao.quantization import quantize_dynamic

            for name in COMPONENTS:
                with warnings.catch_warnings():  # torch marks quantized tensor creation as deprecated; it works
                    warnings.simplefilter("ignore")
                    setattr(self, name, quantize_dynamic(getattr(self, name), {nn.Linear}, dtype=torch.qint8))
                    if name == "language_model":  # the prior in int8 too
                        for unadapted in self._unadapted:
                            quantize_dynamic(unadapted, {nn.Linear}, dtype=torch.qint8, inplace=True)
            _contiguous_lm_head_input(self.language_model)  # the quantized lm_head is a new module
            return self.eval()
        return self.to(getattr(torch, precision)).eval()

    def _apply(self, fn, *args, **kwargs):
        # to(), cuda(), half() and the like reach the unadapted copy too, which is no submodule (not saved); the
        # tensors it shares with the language model are converted in place once, so they stay shared.
        super()._apply(fn, *args, **kwargs)
        for unadapted in getattr(self, "_unadapted", ()):  # _apply also runs while the model is being built
            unadapted._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------------------------------ reporting
    def parameter_report(self) -> dict[str, dict[str, int]]:
        """Parameter counts per component: total, trainable, and LoRA; the CTC head too where there is one (it is
        trained, on its own, by `tiny-audio ctc-head`)."""
        report = {}
        for name in (*COMPONENTS, "ctc_head") if self.ctc_head is not None else COMPONENTS:
            params = dict(getattr(self, name).named_parameters())
            report[name] = {
                "total": sum(p.numel() for p in params.values()),
                "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
                "lora": sum(p.numel() for n, p in params.items() if "lora_" in n),
            }
        report["total"] = {k: sum(r[k] for r in report.values()) for k in ("total", "trainable", "lora")}
        return report

    # --------------------------------------------------------------------------------------- save / load
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that training changes: projector, every LoRA adapter and the CTC head if any."""
        state = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        if self.ctc_head is not None:
            state.update({f"ctc_head.{k}": v for k, v in self.ctc_head.state_dict().items()})
        for name in ("audio_tower", "language_model"):
            state.update({f"{name}.{k}": v for k, v in lora_state_dict(getattr(self, name)).items()})
        return state

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        include_base_weights: bool = False,
        merge_lora: bool = False,
        **kwargs: Any,
    ) -> None:
        """Write config, trained weights (safetensors), processor files and the model code to a folder.

        With `include_base_weights` the backbones are written too, so the folder loads with no other file and no
        network; `merge_lora` then folds the adapters into the base weights.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        processor = self.processor  # registers the audio token id in the config before it is copied
        config = ASRConfig.from_dict(self.config.to_dict())
        for key in ("audio_model_id", "text_model_id"):
            # A backbone given as a relative folder must still be found when loading from another directory.
            value = getattr(config, key)
            if value and value not in NAMED and Path(value).is_dir():
                setattr(config, key, str(Path(value).resolve()))
        if include_base_weights:
            if merge_lora:
                state = {}
                for name in COMPONENTS:
                    part = merged_state_dict(getattr(self, name))
                    state.update({f"{name}.{k}": v for k, v in part.items()})
                config.encoder_lora_rank = 0
                config.decoder_lora_rank = 0
            else:
                state = self.state_dict()
            config.base_weights_included = True
        else:
            state = self.trained_state_dict()
        _save_weights(state, folder / WEIGHTS_NAME)

        # Self-contained folder: the code beside the weights, found through auto_map and custom_pipelines.
        from .pipeline import ASRPipeline

        config.auto_map = {"AutoConfig": "config.ASRConfig", "AutoModel": "model.ASRModel"}
        config.custom_pipelines = {
            PIPELINE_TASK: {"impl": "pipeline.ASRPipeline", "pt": ["AutoModel"], "tf": [], "type": "audio"}
        }
        config.architectures = [type(self).__name__]
        config.save_pretrained(folder)
        for module in (type(self).__module__, ASRPipeline.__module__):
            source = Path(sys.modules[module].__file__)
            for needed in [source, *map(Path, get_relative_import_files(str(source)))]:
                (folder / needed.name).write_bytes(needed.read_bytes())
        # An Inference Endpoints handler, so the uploaded repo also deploys as an endpoint as is.
        from . import handler

        (folder / "handler.py").write_bytes(Path(handler.__file__).read_bytes())
        processor.save_pretrained(folder)
        if self.lexicon is not None:
            self.lexicon.save(folder)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: ASRConfig | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> ASRModel:
        """Load a saved ASRModel from a folder or a hub repo: backbones from their ids (or the folder, when the
        base weights were included), then the trained weights on top."""
        folder = _resolve_folder(pretrained_model_name_or_path, **kwargs)
        if not isinstance(config, ASRConfig):
            config = ASRConfig.from_pretrained(folder)
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        model = cls(config, dtype=dtype)
        weights = folder / WEIGHTS_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}: not a saved Tiny Audio model")
        _load_weights(model, load_file(str(weights)), full=config.base_weights_included)
        model.processor = ASRProcessor.from_pretrained(folder, config=model.config)
        if (folder / LEXICON_NAME).is_file():
            model.lexicon = Lexicon.load(folder / LEXICON_NAME)
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        return model.eval()


class Hypotheses(NamedTuple):
    """All of a beam search's finished hypotheses (`generate(..., return_hypotheses=True)`): `num_beams` rows a
    clip, each clip's best first by the beam's own (length-normalized) ranking."""

    sequences: torch.Tensor  # new tokens only, padded
    sums: torch.Tensor  # the summed score of each (HypothesisScores): LLM, CTC and lexicon parts together
    ctc: torch.Tensor | None  # the CTC head's log-probability of each (CTCPrefixScorer.scores_of); None without it
    ctc_weight: float  # the CTC head's weight in `sums`


class HypothesisScores(LogitsProcessor):
    """Records what beam search sums for each hypothesis: the processed log-probabilities of its tokens, end token
    included (the score before generate() divides it by the length). Put it last among the logits processors,
    with the beam's rows in clips of `beams`, then read `of(sequences)` after generate().

    generate() returns these scores only with `output_scores=True`, which also keeps every step's scores over the
    whole vocabulary (batch x beams x 49k floats a step: 1.7 GB more at the peak of a 5-min file); this keeps the
    last step's. Rows are matched to the previous step's prefixes by their tokens, as beam search reorders rows,
    and the sums are added in float32 in generate()'s order, so they equal its own.

    With `distinct` (tokens -> words so far; `beam_distinct`), it also ends each live hypothesis whose words another
    of its clip's rows has with a better sum (_drop_repeats)."""

    def __init__(
        self,
        beams: int,
        eos_token_id: int | list[int] | None,
        distinct: Callable[[list[int]], str] | None = None,
    ):
        self.beams = beams
        self.eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        self.distinct = distinct
        self.ended: dict[tuple, float] = {}  # (clip, tokens ending in an end token) -> its sum
        self._rows: dict[tuple, int] = {}  # the last step's (clip, prefix) -> its row
        self._sums = torch.zeros(0)  # the last step's prefix sums, by row
        self._scores = torch.zeros(0, 0)  # and its scores

    def _sum_of(self, clip: int, tokens: tuple[int, ...]) -> torch.Tensor:
        if not tokens:
            return torch.zeros((), dtype=self._scores.dtype)
        row = self._rows.get((clip, tokens[:-1]))
        if row is None:
            raise RuntimeError("HypothesisScores: a hypothesis that no step scored (is the processor last?)")
        return self._sums[row] + self._scores[row, tokens[-1]]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        keys = [(row // self.beams, tuple(tokens)) for row, tokens in enumerate(input_ids.tolist())]
        sums = torch.stack([self._sum_of(*key) for key in keys]) if keys else torch.zeros(0)
        for eos in self.eos:
            for (clip, tokens), total in zip(keys, (sums + scores[:, eos].to(sums)).tolist(), strict=True):
                self.ended[(clip, (*tokens, eos))] = total
        self._rows = {key: row for row, key in enumerate(keys)}
        self._sums, self._scores = sums, scores.detach()
        if self.distinct is not None and keys:
            scores = self._drop_repeats(keys, sums, scores)
        return scores

    def _drop_repeats(self, keys: list[tuple], sums: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Ends every live hypothesis whose text so far (by `distinct`) another of its clip's rows has with a
        better sum: "Look away", "look away" and "Look" + "ed away" would otherwise take three of the beam's places
        for one transcript (half of a beam of 16, on dev), and the beam would search fewer readings."""
        best: dict[tuple, int] = {}
        for row, (clip, tokens) in enumerate(keys):
            key = (clip, self.distinct(list(tokens)))
            if key not in best or sums[row] > sums[best[key]]:
                best[key] = row
        keep = torch.zeros(len(keys), dtype=torch.bool)
        keep[list(best.values())] = True
        return scores.masked_fill(~keep.to(scores.device)[:, None], -math.inf)

    def of(self, sequences: torch.Tensor) -> torch.Tensor:
        """The sum of each row of generate()'s output (new tokens only, `beams` rows a clip): up to its first end
        token, or all of it where it ran to the token limit."""
        out = []
        for row, tokens in enumerate(sequences.tolist()):
            end = next((i for i, token in enumerate(tokens) if token in self.eos), None)
            key = (row // self.beams, tuple(tokens if end is None else tokens[: end + 1]))
            out.append(self.ended[key] if end is not None else float(self._sum_of(*key)))
        return torch.tensor(out, dtype=torch.float64)


class _RowLimits(StoppingCriteria):
    """Stops each row of a batch at its own token limit, so a clip gets the same output alone or batched."""

    def __init__(self, limits: torch.Tensor):
        self.limits = limits

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        # Generation from inputs_embeds returns new tokens only, so the length so far is the count of new tokens.
        return input_ids.shape[1] >= self.limits.to(input_ids.device)


class _InternalLMSubtraction(LogitsProcessor):
    """Subtracts weight x the decoder's log-probabilities without the audio from each step's scores.

    A decoder trained on a few hours of speech leans on its text prior: it writes a fluent paraphrase ("occasionally"
    for "sometimes") where the audio says otherwise. Scoring log p(y | audio) - w log p(y | no audio) (internal
    language model estimation, Meng et al. 2021) discounts what the LLM would have written anyway. The text-only
    decoder keeps its own KV cache; beam search reorders rows between steps, so each row's cache is found by
    matching its sequence so far to the previous step's rows."""

    def __init__(self, language_model: nn.Module, context: torch.Tensor, weight: float):
        self.language_model, self.context, self.weight = language_model, context, weight
        self.cache, self.previous = None, None

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows, length = input_ids.shape
        source = None  # for each row, the previous step's row it continues
        if self.cache is not None and self.previous.shape[1] == length - 1:
            same = (input_ids[:, None, :-1] == self.previous[None]).all(-1)  # rows x previous rows
            source = same.int().argmax(-1) if bool(same.any(-1).all()) else None
        if source is None:  # the first step, or not a continuation of the last one: start over
            tokens, self.cache = torch.cat([self.context.expand(rows, -1).to(input_ids.device), input_ids], 1), None
        else:
            self.cache.reorder_cache(source)
            tokens = input_ids[:, -1:]
        out = self.language_model(input_ids=tokens, cache=self.cache, use_cache=True)
        self.cache, self.previous = out.cache, input_ids
        prior = out.logits[:, -1].float().log_softmax(-1)
        return scores - self.weight * prior[:, : scores.shape[-1]].to(scores.dtype)


def count_parameters(config: ASRConfig) -> dict[str, dict[str, int]]:
    """Parameter counts per component from configs alone: the model is built on the meta device, so nothing is
    downloaded or allocated. Missing nested configs come from a folder, the bundled copies or the hub."""
    for key, id_key in (("audio_config", "audio_model_id"), ("text_config", "text_model_id")):
        if getattr(config, key) is None and getattr(config, id_key):
            setattr(config, key, backbone_config(getattr(config, id_key)))
    with torch.device("meta"):
        return ASRModel(config, load_backbones=False).parameter_report()


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    # safetensors refuses tensors that share memory (tied embeddings): keep the first name of each.
    seen, unique = set(), {}
    for key, tensor in state.items():
        ident = (tensor.data_ptr(), tensor.shape, tensor.dtype)
        if tensor.device.type != "meta" and ident in seen:
            continue
        seen.add(ident)
        unique[key] = tensor.detach().contiguous().cpu()
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)  # never leave a half-written weights file


def _load_weights(model: ASRModel, state: dict[str, torch.Tensor], full: bool) -> None:
    expected = model.state_dict() if full else model.trained_state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(
            f"the weights file has {len(unexpected)} tensors this model does not have (e.g. {unexpected[:3]}); "
            "the config and the weights do not belong together"
        )
    missing = set(expected) - set(state)
    if full:
        # Tied weights (e.g. lm_head = embed_tokens) were saved once under their first name.
        ptrs = {expected[k].data_ptr() for k in state}
        missing = {k for k in missing if expected[k].data_ptr() not in ptrs}
    if missing:
        raise ValueError(f"the weights file lacks {len(missing)} tensors (e.g. {sorted(missing)[:3]})")
    model.load_state_dict(state, strict=False)


DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"  # the built-in model, shipped in the package


def _resolve_folder(name_or_path: str | os.PathLike, **kwargs: Any) -> Path:
    if str(name_or_path) == "default":
        if not (DEFAULT_MODEL_DIR / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"the built-in default model is missing from this install ({DEFAULT_MODEL_DIR})")
        return DEFAULT_MODEL_DIR
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download

    hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if kwargs.get(k) is not None}
    return Path(snapshot_download(str(name_or_path), **hub))
