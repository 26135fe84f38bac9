"""Scoring: word error rate after Whisper's English text normalizer, applied to reference and hypothesis alike.

The normalizer is whisper-normalizer's port of openai/whisper's EnglishTextNormalizer (pinned in pyproject):
lower case, fillers and bracketed tags dropped, spellings and numbers standardised.
"""

from __future__ import annotations

from functools import lru_cache

import jiwer


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normalization, whitespace collapsed."""
    return " ".join(_normalizer()(text).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER (and its parts) over normalized texts; utterances whose reference normalizes to nothing count
    their hypothesis words as insertions."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    subs = dels = ins = hits = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_n, hyp_n = normalize_text(ref), normalize_text(hyp)
        if not ref_n:
            ins += len(hyp_n.split())
            continue
        out = jiwer.process_words(ref_n, hyp_n or "")
        subs, dels, ins, hits = subs + out.substitutions, dels + out.deletions, ins + out.insertions, hits + out.hits
    words = subs + dels + hits
    return {
        "wer": (subs + dels + ins) / words if words else float(ins > 0),
        "substitutions": subs,
        "deletions": dels,
        "insertions": ins,
        "words": words,
    }
