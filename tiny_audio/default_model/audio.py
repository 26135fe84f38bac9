"""Audio input: read files, bytes and arrays into 16 kHz mono float32, with clear errors for bad input.

Reading goes through soundfile (WAV, FLAC, OGG/Opus, MP3, ...) and resampling through soxr; no torchaudio.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
# A real-speech sample shipped with the package (public domain; see samples/README.md).
BUNDLED_SAMPLE = Path(__file__).parent / "samples" / "jfk.flac"


class AudioError(ValueError):
    """The audio given cannot be used; the message says which input and why."""


def _read(source: str | os.PathLike | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    if not isinstance(source, io.BytesIO):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: file not found")
        if path.is_dir():
            raise AudioError(f"{name}: is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        reason = str(err).split(": ", 1)[-1] if ": " in str(err) else str(err)
        raise AudioError(f"{name}: not a readable audio file ({reason})") from None
    except (RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{name}: not a readable audio file ({err})") from None
    # Mono stays a view (no copy: an hour of audio is 230 MB); more channels are mixed down.
    return (data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)), rate


def _to_mono(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        # Channels are the short axis: (samples, channels) from soundfile or (channels, samples) from torch.
        return array.mean(axis=0 if array.shape[0] < array.shape[1] else 1)
    raise AudioError(f"{name}: expected a 1-D (mono) or 2-D (multi-channel) array, got shape {array.shape}")


def load_audio(audio: Any, sampling_rate: int | None = None, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Turn a path, bytes, numpy/torch array or {"array", "sampling_rate"} dict into mono float32 at target_rate.

    A bare array is taken to be at `sampling_rate` (default: target_rate). Raises AudioError naming the problem.
    """
    name = "audio"
    if isinstance(audio, dict):
        if "array" in audio or "raw" in audio:
            sampling_rate = audio.get("sampling_rate", sampling_rate)
            if sampling_rate is None:
                raise AudioError('audio dict: "sampling_rate" is missing')
            audio = audio["array"] if "array" in audio else audio["raw"]
        elif "path" in audio or "bytes" in audio:
            audio = audio.get("bytes") or audio["path"]
        else:
            raise AudioError(f'audio dict: expected keys "array" and "sampling_rate", got {sorted(audio)}')
    if isinstance(audio, (str, os.PathLike)):
        name = str(audio)
        array, sampling_rate = _read(audio, name)
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        name = "audio bytes"
        if len(audio) == 0:
            raise AudioError("audio bytes: empty (0 bytes)")
        array, sampling_rate = _read(io.BytesIO(bytes(audio)), name)
    elif hasattr(audio, "detach") and hasattr(audio, "cpu"):  # a torch tensor, without importing torch here
        array = audio.detach().cpu().float().numpy()
    elif isinstance(audio, np.ndarray):
        array = audio
    elif isinstance(audio, (list, tuple)) and audio and all(isinstance(v, (int, float)) for v in audio):
        array = np.asarray(audio, dtype=np.float32)
    else:
        raise AudioError(
            f"unsupported audio input of type {type(audio).__name__}: give a file path, bytes, a numpy array "
            'or {"array": ..., "sampling_rate": ...}'
        )
    if array.dtype.kind not in "fiu":
        raise AudioError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if array.dtype.kind in "iu":  # integer PCM -> [-1, 1]
        array = array.astype(np.float32) / max(abs(np.iinfo(array.dtype).min), np.iinfo(array.dtype).max)
    array = _to_mono(np.asarray(array, dtype=np.float32), name)
    if array.size == 0:
        raise AudioError(f"{name}: contains no samples (zero length)")
    if not np.isfinite(array).all():
        raise AudioError(f"{name}: contains NaN or infinite values")
    rate = int(sampling_rate or target_rate)
    if rate <= 0:
        raise AudioError(f"{name}: sampling rate must be positive, got {rate}")
    if rate != target_rate:
        array = soxr.resample(array, rate, target_rate).astype(np.float32)
    return np.ascontiguousarray(array)
