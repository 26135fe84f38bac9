"""ASRPipeline: `pipeline("automatic-speech-recognition", model=FOLDER, trust_remote_code=True)` for Tiny Audio.

Inputs: a path (WAV, FLAC, OGG/Opus, MP3), bytes, a 16 kHz numpy array, or {"array", "sampling_rate"} at any
rate; a list of these runs in batches of `batch_size`. Generation options pass through the call; audio longer
than `chunk_length_s` is split into windows (cut in pauses, or `segment="stride"` with `stride_length_s` overlaps
reconciled; see transcribe.py), and `return_timestamps=True` adds their spans.
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline

from .audio import load_audio
from .processor import ASRProcessor
from .transcribe import transcribe_arrays

GENERATION_OPTIONS = (
    "max_new_tokens",
    "max_new_tokens_per_second",
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
    "ilm_weight",
    "ctc_head_weight",
    "ctc_word_gaps",
    "ctc_lexicon_penalty",
    "lm_rescore_weight",
    "ctc_rescore_weight",
    "beam_distinct",
)


class ASRPipeline(Pipeline):
    """Speech to text with an ASRModel; returns {"text": ...} per input."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def __init__(self, model: Any, tokenizer: Any = None, feature_extractor: Any = None, **kwargs: Any):
        super().__init__(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor, **kwargs)
        if model._processor is None and tokenizer is not None and feature_extractor is not None:
            model.processor = ASRProcessor(feature_extractor, tokenizer, model.config)
        self.asr_processor: ASRProcessor = model.processor

    def _sanitize_parameters(
        self,
        sampling_rate: int | None = None,
        generate_kwargs: dict | None = None,
        chunk_length_s: float | None = None,
        stride_length_s: Any = None,
        return_timestamps: bool | None = None,
        **kwargs: Any,
    ):
        preprocess = {"sampling_rate": sampling_rate} if sampling_rate is not None else {}
        forward = dict(generate_kwargs or {})
        forward.update({k: kwargs.pop(k) for k in GENERATION_OPTIONS if k in kwargs})
        if chunk_length_s is not None:
            forward["chunk_length_s"] = chunk_length_s
        if stride_length_s is not None:
            forward["stride_length_s"] = stride_length_s
        for key in ("segment", "silence_threshold_db"):
            if key in kwargs:
                forward[key] = kwargs.pop(key)
        postprocess = {"return_timestamps": return_timestamps} if return_timestamps is not None else {}
        if kwargs:
            raise TypeError(f"unknown option(s) for the Tiny Audio pipeline: {', '.join(sorted(kwargs))}")
        return preprocess, forward, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Transcribe one input or a list of inputs (batched by `batch_size`)."""
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        batch_size = kwargs.pop("batch_size", None) or self._batch_size or 1
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        arrays = [self.preprocess(x, **preprocess)["audio"] for x in items]
        with self.device_placement():
            transcripts = transcribe_arrays(self.model, arrays, batch_size=batch_size, **forward)
        results = [self._result(t, **postprocess) for t in transcripts]
        return results[0] if single else results

    @staticmethod
    def _result(transcript: Any, return_timestamps: bool | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {"text": transcript.text}
        if return_timestamps:
            result["chunks"] = [{"timestamp": (s.start, s.end), "text": s.text} for s in transcript.segments]
        return result

    def preprocess(self, inputs: Any, sampling_rate: int | None = None) -> dict[str, Any]:
        return {"audio": load_audio(inputs, sampling_rate, self.model.config.sample_rate)}

    # The single-step hooks of transformers' Pipeline (used by its iterator APIs); __call__ uses transcribe_arrays.
    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        for key in ("chunk_length_s", "stride_length_s", "segment", "silence_threshold_db"):
            generate_kwargs.pop(key, None)
        batch = self.asr_processor(model_inputs["audio"], padding_side="left").to(self.device)
        return {"tokens": self.model.generate(**batch, **generate_kwargs)}

    def postprocess(self, model_outputs: dict[str, Any], return_timestamps: bool | None = None) -> list[dict[str, str]]:
        return [{"text": text} for text in self.asr_processor.batch_decode(model_outputs["tokens"])]
