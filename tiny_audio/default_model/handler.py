"""Hugging Face Inference Endpoints handler, copied as handler.py into every saved Tiny Audio model folder.

An endpoint created from the model's repo finds this file and calls EndpointHandler(path)(data) per request:
data["inputs"] is the audio (the request body's bytes, a base64 string, a URL-free {"array", "sampling_rate"}
dict, or a list of these) and data["parameters"] the pipeline options (batch_size, chunk_length_s,
return_timestamps, max_new_tokens, num_beams, ...). It uses only transformers, so it runs in the endpoint's
stock container; it has no relative imports because it is copied alone.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any


class EndpointHandler:
    """Loads the model folder once; each call transcribes the request's audio."""

    def __init__(self, path: str = ""):
        import torch
        from transformers import pipeline

        device = 0 if torch.cuda.is_available() else -1
        dtype = torch.bfloat16 if torch.cuda.is_available() else None
        self.pipe = pipeline(
            "automatic-speech-recognition", model=path or ".", trust_remote_code=True, device=device, dtype=dtype
        )

    def __call__(self, data: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        inputs = data.get("inputs", data.get("audio"))
        if inputs is None:
            raise ValueError('no audio: send it as the request body or as "inputs"')
        parameters = dict(data.get("parameters") or {})
        if isinstance(inputs, list):
            return self.pipe([_audio(x) for x in inputs], **parameters)
        return self.pipe(_audio(inputs), **parameters)


def _audio(value: Any) -> Any:
    """Base64 text -> bytes; everything else goes to the pipeline as is (it names what it cannot read)."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a string input must be base64-encoded audio") from None
    return value
