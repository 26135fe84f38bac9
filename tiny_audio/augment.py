"""Training augmentation, each switched on by its own option:

- speed perturbation (waveform resampled by a random factor: tempo and pitch change together);
- additive noise at a random signal-to-noise ratio (white noise, or clips from a noise folder);
- SpecAugment-style masking of time spans and frequency bands of the encoder input, or of time spans of
  cached encoder frames;
- silence and noise clips with an empty target, so the model learns to say nothing when nobody speaks.

Waveform changes (speed, noise) make every pass different, so they turn the feature cache off; masking and the
empty-target clips work with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from .audio import AudioError, load_audio
from .data import load_rows


@dataclass
class AugmentConfig:
    """Which augmentations run, and how strongly."""

    speed_range: list[float] | None = None  # e.g. [0.9, 1.1]; None: off
    noise_snr_db: list[float] | None = None  # e.g. [5, 30]: SNR drawn uniformly; None: off
    noise_prob: float = 0.5  # share of clips that get noise
    noise_dir: str | None = None  # folder of noise recordings; None: white noise
    time_masks: int = 0  # SpecAugment: number of time masks per clip (0: off)
    time_mask_width: float = 0.05  # longest time mask, as a share of the clip
    freq_masks: int = 0  # number of frequency-band masks (log-mel input only)
    freq_mask_width: int = 10  # widest band, in mel bins
    silence_share: float = 0.0  # extra silence/noise clips with an empty target, as a share of the training rows

    @property
    def changes_waveform(self) -> bool:
        return self.speed_range is not None or self.noise_snr_db is not None


def change_speed(audio: np.ndarray, factor: float, rate: int = 16000) -> np.ndarray:
    """The clip played `factor` times faster (tempo and pitch together): resampled to rate/factor, read at rate."""
    return soxr.resample(audio, rate, rate / factor).astype(np.float32)


class WaveformAugmenter:
    """Speed and noise on 16 kHz float32 arrays."""

    def __init__(self, config: AugmentConfig, sample_rate: int = 16000, seed: int = 0):
        self.config = config
        self.rate = sample_rate
        self.rng = np.random.default_rng(seed)
        self.noises: list[np.ndarray] = []
        if config.noise_dir:
            for path in sorted(Path(config.noise_dir).rglob("*")):
                try:
                    self.noises.append(load_audio(path, target_rate=sample_rate))
                except AudioError:
                    continue
            if not self.noises:
                raise FileNotFoundError(f"augment.noise_dir: no readable audio in {config.noise_dir}")

    def noise(self, n: int) -> np.ndarray:
        if not self.noises:
            return self.rng.standard_normal(n).astype(np.float32)
        source = self.noises[self.rng.integers(len(self.noises))]
        reps = -(-n // len(source))
        start = self.rng.integers(len(source))
        return np.tile(source, reps + 1)[start : start + n].astype(np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        c = self.config
        if c.speed_range is not None:
            audio = change_speed(audio, self.rng.uniform(*c.speed_range), self.rate)
        if c.noise_snr_db is not None and self.rng.random() < c.noise_prob:
            noise = self.noise(len(audio))
            snr = self.rng.uniform(*c.noise_snr_db)
            signal_power = float(np.mean(audio**2)) + 1e-10
            noise_power = float(np.mean(noise**2)) + 1e-10
            audio = audio + noise * np.sqrt(signal_power / (noise_power * 10 ** (snr / 10)))
        return audio.astype(np.float32)


def spec_augment(
    x: torch.Tensor, lengths: torch.Tensor, config: AugmentConfig, generator: torch.Generator, time_axis: int
) -> torch.Tensor:
    """A masked copy of a padded batch: random time spans along `time_axis` (1 for B, T, C frames; -1 for B, S
    waveforms and B, M, T log-mels) and, for log-mels, random bands of mel bins (axis 1)."""

    def draw(high: int) -> int:
        return int(torch.randint(0, max(1, high) + 1, (1,), generator=generator))

    x = x.clone()
    is_mel = x.dim() == 3 and time_axis == -1
    for i, n in enumerate(lengths.tolist()):
        row = x[i]  # a view: [M,] T or T, C
        for _ in range(config.time_masks):
            width = draw(int(config.time_mask_width * n))
            start = draw(n - width)
            if time_axis == 1:
                row[start : start + width] = 0
            else:
                row[..., start : start + width] = 0
        if is_mel:
            for _ in range(config.freq_masks):
                width = draw(config.freq_mask_width)
                start = draw(row.shape[0] - width)
                row[start : start + width, :n] = 0
    return x


def make_silence_clips(folder: Path, count: int, sample_rate: int = 16000, seed: int = 0) -> list[dict[str, Any]]:
    """Write `count` clips of digital silence or quiet noise (1-10 s) and return manifest rows with empty text."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        seconds = float(rng.uniform(1.0, 10.0))
        n = int(seconds * sample_rate)
        level = [0.0, 0.001, 0.005, 0.02][i % 4]  # silence, then noise from faint to audible
        audio = (rng.standard_normal(n) * level).astype(np.float32)
        path = folder / f"silence-{seed}-{i}.flac"
        if not path.exists():
            sf.write(path, audio, sample_rate)
        rows.append({"id": path.stem, "audio": str(path), "text": "", "duration": round(n / sample_rate, 3)})
    return rows


def speed_copies(manifest: str | Path, out_dir: str | Path, factors: list[float]) -> dict[str, Any]:
    """Write every clip of `manifest` played `factor` times faster, for each factor (Kaldi-style speed
    perturbation: tempo and pitch change together), as 16 kHz FLAC with out_dir/manifest.jsonl; returns counts.

    Fixed copies on disk, unlike `speed_range`, keep the frozen-encoder feature cache usable: each copy is one more
    real voice (a little lower or higher, slower or faster) whose frames are computed once."""
    if not factors or any(f <= 0 for f in factors):
        raise ValueError(f"speed factors must be positive, got {factors}")
    rows, report = load_rows(manifest)
    if not rows:
        raise ValueError(f"{manifest}: no usable rows ({report})")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    by_factor: dict[float, list[dict[str, Any]]] = {factor: [] for factor in factors}
    failed = 0
    for row in rows:
        try:
            audio = load_audio(row["audio"])  # decoded once for all factors
        except AudioError:
            failed += len(factors)
            continue
        for factor in factors:
            name = f"{Path(row['audio']).stem}-sp{factor:g}"
            copy = change_speed(audio, factor)
            sf.write(out / "audio" / f"{name}.flac", copy, 16000)
            by_factor[factor].append({**row, "id": f"{row['id']}-sp{factor:g}", "audio": f"audio/{name}.flac",
                                      "duration": round(len(copy) / 16000, 3), "speed": factor})  # fmt: skip
    written = [r for factor in factors for r in by_factor[factor]]  # all of one factor, then the next
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in written))
    return {"clips": len(written), "failed": failed, "hours": sum(r["duration"] for r in written) / 3600}
