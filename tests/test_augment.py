"""Augmentation: speed, noise at a target SNR, SpecAugment-style masks, silence clips; cache compatibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny_audio.augment import AugmentConfig, WaveformAugmenter, make_silence_clips, spec_augment, speed_copies
from tiny_audio.data import load_rows
from tiny_audio.testing import tone


def test_speed_perturbation_changes_length_by_the_factor():
    aug = WaveformAugmenter(AugmentConfig(speed_range=[1.25, 1.25]))
    assert abs(len(aug(tone(2.0))) - round(32000 / 1.25)) <= 2


def test_speed_copies_write_each_clip_at_each_factor_with_its_transcript(tmp_path):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.flac", tone(2.0), 16000)
    row = {"id": "a", "audio": "a.flac", "text": "HELLO THERE", "duration": 2.0, "source": "test"}
    (tmp_path / "in" / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    counts = speed_copies(tmp_path / "in" / "manifest.jsonl", tmp_path / "sp", [0.9, 1.1])
    assert counts["clips"] == 2 and counts["failed"] == 0
    rows, _ = load_rows(tmp_path / "sp")  # the copies form a manifest the trainer reads as is
    assert [r["id"] for r in rows] == ["a-sp0.9", "a-sp1.1"]
    assert all(r["text"] == "HELLO THERE" and r["source"] == "test" for r in rows)
    for r, factor in zip(rows, [0.9, 1.1], strict=True):
        audio, rate = sf.read(r["audio"])
        assert rate == 16000 and abs(len(audio) - 32000 / factor) <= 2
        assert r["duration"] == pytest.approx(2.0 / factor, abs=1e-3)
    with pytest.raises(ValueError, match="positive"):
        speed_copies(tmp_path / "in" / "manifest.jsonl", tmp_path / "bad", [0.0])


def test_noise_is_added_at_the_drawn_snr():
    aug = WaveformAugmenter(AugmentConfig(noise_snr_db=[10, 10], noise_prob=1.0), seed=3)
    clean = tone(2.0)
    noisy = aug(clean)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(10, abs=0.3)


def test_spec_augment_masks_inside_each_clip_only():
    config = AugmentConfig(time_masks=2, time_mask_width=0.2, freq_masks=2, freq_mask_width=8)
    mel = torch.ones(2, 80, 100)
    lengths = torch.tensor([100, 60])
    masked = spec_augment(mel, lengths, config, torch.Generator().manual_seed(0), time_axis=-1)
    assert (masked == 0).any() and (mel == 1).all(), "a masked copy; the input is untouched"
    assert (masked[1, :, 60:] == 1).all(), "padding beyond the clip is not touched"
    frames = torch.ones(2, 50, 16)
    masked = spec_augment(frames, torch.tensor([50, 30]), config, torch.Generator().manual_seed(1), time_axis=1)
    zero_rows = (masked == 0).all(-1)  # whole frames masked along time
    assert zero_rows.any() and not zero_rows[1, 30:].any()


def test_silence_clips_have_empty_targets(tmp_path):
    rows = make_silence_clips(tmp_path, 4, seed=1)
    assert [r["text"] for r in rows] == ["", "", "", ""]
    assert all(1.0 <= r["duration"] <= 10.0 for r in rows)
    assert rows == make_silence_clips(tmp_path, 4, seed=1), "deterministic for a seed"
