"""load_audio: every accepted input kind, and a clear error naming the problem for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tiny_audio import AudioError, load_audio
from tiny_audio.processor import MIN_SAMPLES
from tiny_audio.testing import tone


@pytest.mark.parametrize(
    ("fmt", "ext", "tol"), [("WAV", "wav", 1e-4), ("FLAC", "flac", 1e-4), ("OGG", "ogg", None), ("MP3", "mp3", None)]
)
def test_reads_common_formats(tmp_path, fmt, ext, tol):
    clip = tone(1.0)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, clip, 16000, format=fmt)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - len(clip)) < 2000  # lossy codecs may pad a little
    if tol:
        np.testing.assert_allclose(audio, clip, atol=tol)


def test_bytes_dict_resampling_stereo_and_int_pcm(tmp_path):
    clip = tone(1.0)
    sf.write(tmp_path / "c.wav", clip, 16000)
    from_bytes = load_audio((tmp_path / "c.wav").read_bytes())
    np.testing.assert_allclose(from_bytes, clip, atol=1e-4)
    resampled = load_audio({"array": tone(1.0, rate=8000), "sampling_rate": 8000})
    assert len(resampled) == 16000
    stereo = np.stack([clip, clip], axis=1)  # (samples, channels)
    np.testing.assert_allclose(load_audio(stereo), clip, atol=1e-6)
    np.testing.assert_allclose(load_audio(stereo.T), clip, atol=1e-6)  # (channels, samples)
    pcm = (clip * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), clip, atol=1e-3)
    sf.write(tmp_path / "s.wav", stereo, 44100)
    from_44k = load_audio(tmp_path / "s.wav")  # a stereo 44.1 kHz file: mixed down and resampled
    assert abs(len(from_44k) - round(len(clip) * 16000 / 44100)) <= 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(0, dtype=np.float32), "zero length"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        (np.array([0.1, np.inf], dtype=np.float32), "NaN or infinite"),
        (12345, "unsupported audio input of type int"),
        (np.array(["a", "b"]), "numeric"),
        ({"array": np.zeros(10)}, "sampling_rate"),
        (np.zeros((2, 2, 2), dtype=np.float32), "shape"),
        (b"", "empty"),
        (b"definitely not audio", "not a readable audio file"),
    ],
)
def test_bad_input_gives_a_clear_error(value, message):
    with pytest.raises(AudioError, match=message):
        load_audio(value)


def test_bad_files_name_the_file_and_the_reason(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.flac"
    text.write_text("these are not audio samples")
    corrupt = tmp_path / "corrupt.wav"
    sf.write(corrupt, tone(0.5), 16000)
    corrupt.write_bytes(b"RIFX" + corrupt.read_bytes()[4:40])
    for path, reason in [
        (tmp_path / "missing.wav", "file not found"),
        (empty, "empty file"),
        (text, "not a readable audio file"),
        (corrupt, "not a readable audio file"),
        (tmp_path, "is a folder"),
    ]:
        with pytest.raises(AudioError, match=reason) as err:
            load_audio(path)
        assert str(path) in str(err.value)


def test_very_short_clip_still_gives_audio_tokens(make_model):
    model = make_model("hubert", "qwen3")
    batch = model.processor([tone(0.01)])
    assert batch["audio_attention_mask"].sum() == MIN_SAMPLES
    assert (batch["input_ids"] == model.config.audio_token_id).sum() >= 1
    model.generate(**batch, max_new_tokens=2)
