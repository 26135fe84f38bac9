"""Recognizers behind `tiny-audio eval --model`: a Tiny Audio model, or a peer scored the same way.

    load_recognizer("runs/mine/final")          # a Tiny Audio model folder or hub id
    load_recognizer("faster-whisper:base")      # offline Whisper base run by faster-whisper (int8, greedy)
    load_recognizer("faster-whisper:base:float32")
    load_recognizer("pocketsphinx")             # CMU PocketSphinx with its bundled English model
    load_recognizer("default:bfloat16")         # a Tiny Audio model in bfloat16 on the CPU (or :int8, :float32)

Each has `name`, `transcribe(arrays) -> texts` (16 kHz mono float32) and `describe() -> dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FASTER_WHISPER_SIZES = {"base": "whisper-base", "tiny.en": "whisper-tiny.en"}


@dataclass(frozen=True)
class Decoding:
    """How a Tiny Audio model decodes, as it takes effect: the one place that knows which settings matter when.
    Joint decoding's lexicon penalty and word gaps only with a CTC head weight; rescoring only with a beam; CTC
    rescoring at the search's own weight unless another is set. The recognizer (its name), `tiny-audio eval` (the
    folder suffix) and the model card (row labels, the indexed default) all read a decoding through this."""

    num_beams: int = 1
    ctc_head_weight: float = 0.0
    ctc_lexicon_penalty: float = 0.0
    ctc_word_gaps: bool = True
    lm_rescore_weight: float = 0.0
    ctc_rescore_weight: float = 0.0

    @classmethod
    def of(cls, settings: Mapping[str, Any], has_head: bool = True) -> Decoding:
        """From generation settings (a model's generation defaults with what was asked over them) or a result
        (`describe()`, results.json); `has_head` False when the model has no CTC head to weigh."""
        beams = int(settings.get("num_beams") or 1)
        ctc = float(settings.get("ctc_head_weight") or 0.0) if has_head else 0.0
        rescore_ctc = settings.get("ctc_rescore_weight")
        return cls(
            num_beams=beams,
            ctc_head_weight=ctc,
            ctc_lexicon_penalty=float(settings.get("ctc_lexicon_penalty") or 0.0) if ctc else 0.0,
            ctc_word_gaps=settings.get("ctc_word_gaps", True) is not False if ctc else True,
            lm_rescore_weight=float(settings.get("lm_rescore_weight") or 0.0) if beams > 1 else 0.0,
            ctc_rescore_weight=float(rescore_ctc) if rescore_ctc is not None and beams > 1 and ctc else ctc,
        )

    def suffix(self) -> str:
        """For folder and file names: "-beams4-ctc0.2-nogaps-lex5-lm0.3-rctc0.5", "" for greedy with the LLM alone."""
        out = f"-beams{self.num_beams}" if self.num_beams > 1 else ""
        if self.ctc_head_weight:
            out += f"-ctc{self.ctc_head_weight:g}" + ("" if self.ctc_word_gaps else "-nogaps")
            out += f"-lex{self.ctc_lexicon_penalty:g}" if self.ctc_lexicon_penalty else ""
        out += f"-lm{self.lm_rescore_weight:g}" if self.lm_rescore_weight else ""
        return out + (f"-rctc{self.ctc_rescore_weight:g}" if self.ctc_rescore_weight != self.ctc_head_weight else "")

    def parts(self, gaps_apart: bool = False) -> list[str]:
        """The settings that differ from greedy decoding with the LLM alone, in words: ["beams 4", "CTC 0.2 without
        word gaps", "lexicon 5", ...]; `gaps_apart` names the word gaps on their own ("CTC 0.2", "no word gaps"), as
        recognizer names (and so the eval logs they identify) always have."""
        out = [f"beams {self.num_beams}"] if self.num_beams > 1 else []
        if self.ctc_head_weight:
            ctc = f"CTC {self.ctc_head_weight:g}"
            if self.ctc_word_gaps:
                out.append(ctc)
            elif gaps_apart:
                out += [ctc, "no word gaps"]
            else:
                out.append(f"{ctc} without word gaps")
        out += [f"lexicon {self.ctc_lexicon_penalty:g}"] if self.ctc_lexicon_penalty else []
        out += [f"LM rescoring {self.lm_rescore_weight:g}"] if self.lm_rescore_weight else []
        if self.ctc_rescore_weight != self.ctc_head_weight:
            out.append(f"CTC rescoring {self.ctc_rescore_weight:g}")
        return out


class TinyAudioRecognizer:
    """A Tiny Audio model, greedy by default, batched."""

    def __init__(self, name_or_path: str, precision: str = "float32", **generate_kwargs: Any):
        from .evaluate import process_state
        from .model import ASRModel

        self.model = ASRModel.from_pretrained(name_or_path)
        self.weights_sha256 = _weights_digest(self.model.trained_state_dict())
        # What decodes: each setting asked for, else the model's own default (see Decoding for which apply when).
        asked = {k: v for k, v in generate_kwargs.items() if v is not None}
        settings = {**self.model.config.generation_defaults, **asked}
        self.decoding = Decoding.of(settings, has_head=self.model.ctc_head is not None)
        # The word list is part of what decodes: an eval resumed after swapping lexicon.txt must not mix two lists.
        lexicon = self.model.lexicon if self.decoding.ctc_lexicon_penalty else None
        self.lexicon_sha256 = _words_digest(lexicon.sorted) if lexicon is not None else None
        self.name = name_or_path if precision == "float32" else f"{name_or_path}:{precision}"
        self.name += "".join(f" ({part})" for part in self.decoding.parts(gaps_apart=True))
        device = process_state().device  # this process's GPU under `accelerate launch`, else cuda:0 or the CPU
        if device.type == "cuda":  # bf16 on a GPU, whatever the CPU precision asked
            self.model = self.model.for_inference("bfloat16").to(device)
        else:
            self.model = self.model.for_inference(precision)
        self.generate_kwargs = generate_kwargs

    def transcribe(self, arrays: list[np.ndarray]) -> list[str]:
        from .transcribe import transcribe_arrays

        return [t.text for t in transcribe_arrays(self.model, arrays, batch_size=len(arrays), **self.generate_kwargs)]

    def describe(self) -> dict[str, Any]:
        report = self.model.parameter_report()["total"]
        return {
            "parameters": report["total"],
            "trainable_parameters": report["trainable"],
            "system": "tiny-audio",
            **asdict(self.decoding),
            "weights_sha256": self.weights_sha256,
            "lexicon_sha256": self.lexicon_sha256,
        }


def decoding_suffix(result: dict[str, Any]) -> str:
    """How a Tiny Audio result decoded, for folder and file names (Decoding.suffix). `result` is a recognizer's
    `describe()` or a results.json written from one."""
    return Decoding.of(result).suffix()


def _weights_digest(state: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the trained weights, as float32, by name: which weights a result is of."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _words_digest(words: list[str]) -> str:
    """SHA-256 (first 16 hex digits) of a word list, one word per line: which lexicon a result is of."""
    import hashlib

    return hashlib.sha256("".join(f"{w}\n" for w in words).encode()).hexdigest()[:16]


class FasterWhisperRecognizer:
    """Whisper through faster-whisper (CTranslate2) on the offline CTranslate2 files: English, greedy."""

    def __init__(self, size: str = "base", compute_type: str = "int8"):
        from faster_whisper import WhisperModel

        from .backbones import ct2_folder

        if size not in FASTER_WHISPER_SIZES:
            raise ValueError(f"faster-whisper:{size}: offline sizes are {', '.join(FASTER_WHISPER_SIZES)}")
        self.name = f"faster-whisper:{size}:{compute_type}"
        self.english_only = size.endswith(".en")
        self.model = WhisperModel(str(ct2_folder(FASTER_WHISPER_SIZES[size])), device="cpu", compute_type=compute_type)

    def transcribe(self, arrays: list[np.ndarray]) -> list[str]:
        """One clip at a time through faster-whisper's own `transcribe` (its usual CPU use)."""
        texts = []
        for audio in arrays:
            segments, _ = self.model.transcribe(
                audio, beam_size=1, language="en", without_timestamps=True, condition_on_previous_text=False,
                temperature=0.0, vad_filter=False,
            )  # fmt: skip
            texts.append("".join(s.text for s in segments).strip())
        return texts

    def transcribe_batched(self, arrays: list[np.ndarray]) -> list[str]:
        """Clips of up to 30 s in one CTranslate2 batch: what faster-whisper's BatchedInferencePipeline does with
        the VAD chunks of one file, applied across files (same features, prompt and suppressed tokens, greedy)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        if any(len(a) > 30 * 16000 for a in arrays):
            return self.transcribe(arrays)
        model = self.model
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        features = np.stack([pad_or_trim(model.feature_extractor(a)) for a in arrays]).astype(np.float32)
        prompt = model.get_prompt(tokenizer, previous_tokens=[], without_timestamps=True)
        results = model.model.generate(
            model.encode(features), [list(prompt) for _ in arrays], beam_size=1, max_length=model.max_length,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )  # fmt: skip
        return [tokenizer.decode([t for t in r.sequences_ids[0] if t < tokenizer.eot]).strip() for r in results]

    def describe(self) -> dict[str, Any]:
        return {"parameters": 74_000_000 if "base" in self.name else 39_000_000, "system": "faster-whisper"}


class PocketSphinxRecognizer:
    """CMU PocketSphinx with the English acoustic and language model that ships with the package."""

    name = "pocketsphinx"

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000)

    def transcribe(self, arrays: list[np.ndarray]) -> list[str]:
        """One utterance at a time through the PocketSphinx decoder."""
        texts = []
        for audio in arrays:
            self.decoder.start_utt()
            self.decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            texts.append(hyp.hypstr if hyp else "")
        return texts

    def describe(self) -> dict[str, Any]:
        return {"system": "pocketsphinx"}


def load_recognizer(
    spec: str,
    num_beams: int | None = None,
    ctc_head_weight: float | None = None,
    lexicon_penalty: float | None = None,
    lm_rescore_weight: float | None = None,
    ctc_rescore_weight: float | None = None,
) -> Any:
    """A recognizer from `--model`: faster-whisper:SIZE[:COMPUTE], pocketsphinx, or a Tiny Audio model.

    `num_beams`, `ctc_head_weight`, `lexicon_penalty` (ctc_lexicon_penalty), `lm_rescore_weight` and
    `ctc_rescore_weight` apply to Tiny Audio models only (None: the model's own default); the peers stay greedy,
    as they are compared."""
    if spec.startswith("faster-whisper:"):
        parts = spec.split(":")
        return FasterWhisperRecognizer(parts[1], parts[2] if len(parts) > 2 else "int8")
    if spec == "pocketsphinx":
        return PocketSphinxRecognizer()
    from .model import PRECISIONS

    name, _, precision = spec.rpartition(":")
    options = {} if num_beams is None else {"num_beams": num_beams}
    if ctc_head_weight is not None:
        options["ctc_head_weight"] = ctc_head_weight
    if lexicon_penalty is not None:
        options["ctc_lexicon_penalty"] = lexicon_penalty
    if lm_rescore_weight is not None:
        options["lm_rescore_weight"] = lm_rescore_weight
    if ctc_rescore_weight is not None:
        options["ctc_rescore_weight"] = ctc_rescore_weight
    if name and precision in PRECISIONS:  # a Tiny Audio model at a CPU precision: default:bfloat16
        return TinyAudioRecognizer(name, precision=precision, **options)
    return TinyAudioRecognizer(spec, **options)
