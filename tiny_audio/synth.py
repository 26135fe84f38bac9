"""Synthetic speech for training: espeak-ng (and flite, where installed) over many voices, speeds and pitches.

    tiny-audio data synth --text sentences.txt --out data/synth --copies 2

Each line of the text file is spoken `copies` times, each time by a voice, speed and pitch drawn from a seeded
generator; clips are written as 16 kHz mono FLAC with a manifest.jsonl. The voices sound robotic: useful to
widen vocabulary and for silence/number coverage, but real speech is what a model is judged on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .audio import AudioError, load_audio

ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("", "+m1", "+m3", "+m5", "+m7", "+f1", "+f2", "+f3", "+f4", "+croak", "+klatt")
FLITE_VOICES = ("kal", "awb", "rms", "slt")


class SynthError(RuntimeError):
    """Synthesis cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" or "flite"
    name: str
    speed: float  # relative to the engine's normal rate
    pitch: int  # espeak-ng 0-99; flite: target mean f0 in Hz

    def command(self, text_file: Path, wav: Path) -> list[str]:
        if self.engine == "espeak-ng":
            words_per_minute = str(round(175 * self.speed))
            return ["espeak-ng", "-v", self.name, "-s", words_per_minute, "-p", str(self.pitch), "-f", str(text_file),
                    "-w", str(wav)]  # fmt: skip
        return ["flite", "-voice", self.name, "--setf", f"duration_stretch={1 / self.speed:.3f}",
                "--setf", f"int_f0_target_mean={self.pitch}", "-f", str(text_file), "-o", str(wav)]  # fmt: skip


def available_engines() -> list[str]:
    """The synthesis programs found on PATH."""
    return [e for e in ("espeak-ng", "flite") if shutil.which(e)]


def draw_voice(rng: np.random.Generator, engines: list[str]) -> Voice:
    engine = engines[rng.integers(len(engines))]
    speed = float(rng.uniform(0.8, 1.25))
    if engine == "espeak-ng":
        name = ESPEAK_VOICES[rng.integers(len(ESPEAK_VOICES))] + ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]
        return Voice(engine, name, speed, int(rng.integers(25, 75)))
    return Voice(engine, FLITE_VOICES[rng.integers(len(FLITE_VOICES))], speed, int(rng.integers(90, 200)))


def synthesize(
    text_file: str | Path,
    out_dir: str | Path,
    copies: int = 1,
    seed: int = 0,
    engines: list[str] | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Speak every line of `text_file`; returns counts. Writes out_dir/audio/*.flac and out_dir/manifest.jsonl."""
    engines = engines or available_engines()
    missing = [e for e in engines if not shutil.which(e)]
    if not engines or missing:
        raise SynthError(
            f"no speech synthesizer found{' (' + ', '.join(missing) + ')' if missing else ''}: "
            "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng flite; macOS: brew install espeak-ng)"
        )
    lines = [line.strip() for line in Path(text_file).read_text().splitlines() if line.strip()]
    if not lines:
        raise SynthError(f"{text_file}: no text lines to speak")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = [(i, c, line, draw_voice(rng, engines)) for i, line in enumerate(lines) for c in range(copies)]

    def run(job: tuple[int, int, str, Voice]) -> dict[str, Any] | None:
        i, c, line, voice = job
        with tempfile.TemporaryDirectory() as tmp:
            text_path, wav = Path(tmp) / "line.txt", Path(tmp) / "out.wav"
            text_path.write_text(line + "\n")
            done = subprocess.run(voice.command(text_path, wav), capture_output=True, timeout=120)
            if done.returncode != 0 or not wav.is_file():
                return None
            try:
                audio = load_audio(wav)
            except AudioError:
                return None
        name = f"synth-{seed}-{i:05d}-{c}"
        sf.write(out / "audio" / f"{name}.flac", audio, 16000)
        return {
            "id": name,
            "audio": f"audio/{name}.flac",
            "text": line,
            "duration": round(len(audio) / 16000, 3),
            "source": f"{voice.engine}:{voice.name}",
            "speaker": f"{voice.engine}:{voice.name}:s{voice.speed:.2f}:p{voice.pitch}",
        }

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        rows = list(pool.map(run, jobs))
    good = [r for r in rows if r is not None]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good))
    return {
        "clips": len(good),
        "failed": len(rows) - len(good),
        "voices": len({r["source"] for r in good}),
        "hours": sum(r["duration"] for r in good) / 3600,
    }
