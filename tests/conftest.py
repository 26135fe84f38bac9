"""Shared fixtures: tiny random backbones (built once per session) and synthetic audio."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tiny_audio import ASRConfig, ASRModel
from tiny_audio.testing import make_tiny_backbones, tone


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Converted offline backbones go to a per-session cache, never the user's."""
    folder = tmp_path_factory.mktemp("tiny-audio-cache")
    old = os.environ.get("TINY_AUDIO_CACHE")
    os.environ["TINY_AUDIO_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TINY_AUDIO_CACHE", None)
    else:
        os.environ["TINY_AUDIO_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data():
    """The shared speech data folder; tests that need it are skipped with the reason when it is missing."""
    from tiny_audio.data import shared_data_dir

    folder = shared_data_dir()
    if folder is None:
        pytest.skip("shared speech data not found: expected ../shared/data beside the checkout or TINY_AUDIO_DATA")
    return folder


@pytest.fixture(scope="session")
def backbones(tmp_path_factory):
    """Returns a function (encoder, decoder) -> (audio_dir, text_dir), building each folder once."""
    root = tmp_path_factory.mktemp("backbones")
    cache: dict[tuple[str, str], tuple[str, str]] = {}

    def get(encoder: str = "whisper", decoder: str = "qwen3") -> tuple[str, str]:
        if (encoder, decoder) not in cache:
            cache[(encoder, decoder)] = make_tiny_backbones(root / f"{encoder}-{decoder}", encoder, decoder)
        return cache[(encoder, decoder)]

    return get


@pytest.fixture(scope="session")
def make_model(backbones):
    """Returns a function building a fresh tiny ASRModel (eval mode, fixed seed)."""

    def build(encoder: str = "whisper", decoder: str = "qwen3", **overrides) -> ASRModel:
        audio_dir, text_dir = backbones(encoder, decoder)
        torch.manual_seed(0)
        config = ASRConfig(audio_model_id=audio_dir, text_model_id=text_dir, projector_hidden_dim=64, **overrides)
        return ASRModel(config).eval()

    return build


@pytest.fixture
def clips() -> list[np.ndarray]:
    """Three clips of different lengths, so batches need padding."""
    return [tone(1.0, 220, seed=1), tone(1.7, 330, seed=2), tone(0.6, 440, seed=3)]
