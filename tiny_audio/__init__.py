"""Tiny Audio: train your own speech recognizer from a pretrained audio encoder and a pretrained LLM.

import tiny_audio
model = tiny_audio.load_model("path/or/hub-id")
"""

from __future__ import annotations

from .audio import AudioError, load_audio
from .config import ASRConfig
from .model import ASRModel
from .pipeline import ASRPipeline
from .processor import ASRProcessor

__version__ = "0.1.0"


def load_model(name_or_path: str, **kwargs) -> ASRModel:
    """Load a saved Tiny Audio model from a folder or a Hugging Face hub id."""
    return ASRModel.from_pretrained(name_or_path, **kwargs)


__all__ = ["ASRConfig", "ASRModel", "ASRPipeline", "ASRProcessor", "AudioError", "load_audio", "load_model"]
