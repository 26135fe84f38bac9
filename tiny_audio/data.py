"""Speech data: locating the project's shared data folder and reading JSONL manifests."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from .audio import AudioError, load_audio

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared speech data (TINY_AUDIO_DATA, else ../shared/data beside the checkout), or None if absent."""
    candidates = [
        os.environ.get("TINY_AUDIO_DATA"),
        REPO_ROOT.parent / "shared" / "data",
        Path.cwd() / "../shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "dev" / "manifest.jsonl").is_file():
            return Path(candidate).resolve()
    return None


def resolve_data_path(path: str | Path) -> Path:
    """A data path as given if it exists, else relative to the shared data folder; a clear error otherwise."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    shared = shared_data_dir()
    if shared is not None and not path.is_absolute() and (shared / path).exists():
        return shared / path
    where = f"./{path} or {shared / path}" if shared else f"./{path} (no shared data folder found: set TINY_AUDIO_DATA)"
    raise FileNotFoundError(f"data not found: looked for {where}")


@dataclass
class LoadReport:
    """What reading a data source kept and why it dropped the rest."""

    source: str
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def __str__(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return f"{self.source}: kept {self.kept}, dropped {dropped}"


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")


def _target(text: Any, normalize: bool) -> str:
    """A row's transcript, stripped, Whisper-normalized if asked."""
    text = str(text or "").strip()
    if normalize:
        from .evaluate import normalize_text

        text = normalize_text(text)
    return text


def _drop_reason(text: str, duration: float, min_duration_s: float, max_duration_s: float | None) -> str | None:
    """Why a row with a readable audio file is not used, or None to keep it."""
    if not text:
        return "empty transcripts"
    if duration <= 0:
        return "zero durations"
    if duration < min_duration_s or (max_duration_s and duration > max_duration_s):
        return "outside the duration range"
    return None


def scan_folder(folder: str | Path) -> tuple[list[dict[str, Any]], LoadReport]:
    """Manifest rows for a folder of audio files, each with its transcript in a same-named .txt file."""
    folder = Path(folder)
    report = LoadReport(str(folder))
    rows = []
    for audio in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            report.drop("audio files without a .txt transcript")
            continue
        try:
            info = sf.info(str(audio))
            duration = info.frames / info.samplerate
        except (sf.LibsndfileError, RuntimeError, ValueError):
            report.drop("unreadable audio files")
            continue
        rows.append(
            {
                "id": str(audio.relative_to(folder).with_suffix("")),
                "audio": str(audio.relative_to(folder)),
                "text": transcript.read_text().strip(),
                "duration": round(duration, 3),
            }
        )
    return rows, report


def load_rows(
    source: str | Path,
    min_duration_s: float = 0.0,
    max_duration_s: float | None = None,
    text_field: str = "text",
    normalize: bool = False,
) -> tuple[list[dict[str, Any]], LoadReport]:
    """Rows {audio, text, duration, source} from a manifest, a folder holding manifest.jsonl, or a folder of
    audio files with .txt transcripts; filtered, and the target text Whisper-normalized if asked.

    Rows with a missing audio file, empty text, zero or out-of-range duration are dropped and counted.
    """
    path = resolve_data_path(source)
    if path.is_dir() and not (path / "manifest.jsonl").is_file():
        raw, report = scan_folder(path)
        base = path
    else:
        path = path / "manifest.jsonl" if path.is_dir() else path
        report, raw, base = LoadReport(str(path)), [], path.parent
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    raw.append(json.loads(line))
                except ValueError:
                    report.drop("unparsable lines")
    rows = []
    for line_no, row in enumerate(raw, 1):
        text = _target(row.get(text_field) or row.get("text"), normalize)
        duration = float(row.get("duration") or 0.0)
        audio = base / str(row.get("audio", ""))
        reason = _drop_reason(text, duration, min_duration_s, max_duration_s)
        if not row.get("audio") or not audio.is_file():
            report.drop("missing audio files")
        elif reason:
            report.drop(reason)
        else:
            rows.append(
                {
                    "id": row.get("id", f"{path.name}:{line_no}"),
                    "audio": str(audio),
                    "text": text,
                    "duration": duration,
                    "source": row.get("source", ""),
                }
            )
    report.kept = len(rows)
    return rows, report


# ------------------------------------------------------------------------------------ Hugging Face datasets
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: rows repeated by mixing share one
class HFAudio:
    """A row's audio in a Hugging Face dataset, read when needed (the dataset is not decoded up front)."""

    dataset: Any
    index: int
    column: str

    def read(self) -> dict[str, Any]:
        return self.dataset[self.index][self.column]

    @property
    def cache_key(self) -> str:
        return f"hf:{self.dataset._fingerprint}:{self.index}"


def read_clip(source: Any, sample_rate: int = 16000) -> np.ndarray:
    """The audio of a data row: a file path, or an HFAudio reference read on demand."""
    return load_audio(source.read() if isinstance(source, HFAudio) else source, target_rate=sample_rate)


def is_hf_source(source: str | Path) -> bool:
    """`hf:NAME[:CONFIG[:SPLIT]]`, or a folder written by `datasets`' save_to_disk."""
    path = Path(source)
    return str(source).startswith("hf:") or (
        path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
    )


def open_hf_dataset(source: str | Path, split: str = "train", streaming: bool = False, audio_column: str = "audio"):
    """Open a hub dataset or a saved one, with the audio column left undecoded (soundfile decodes it later)."""
    import datasets

    if str(source).startswith("hf:"):
        name, config, split_ = (str(source)[3:].split(":") + [None, None])[:3]
        ds = datasets.load_dataset(name, config, split=split_ or split, streaming=streaming)
    else:
        ds = datasets.load_from_disk(str(source))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise KeyError(f"{source}: no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
    if audio_column not in ds.column_names:
        raise KeyError(f"{source}: no audio column {audio_column!r} (columns: {', '.join(ds.column_names)})")
    return ds.cast_column(audio_column, datasets.Audio(decode=False))


def hf_text_column(ds: Any, text_column: str | None) -> str:
    if text_column:
        if text_column not in ds.column_names:
            raise KeyError(f"no text column {text_column!r} (columns: {', '.join(ds.column_names)})")
        return text_column
    for name in TEXT_COLUMNS:
        if name in ds.column_names:
            return name
    raise KeyError(f"no transcript column found among {', '.join(ds.column_names)}; set data.text_column")


def load_hf_rows(
    source: str | Path,
    split: str = "train",
    audio_column: str = "audio",
    text_column: str | None = None,
    min_duration_s: float = 0.0,
    max_duration_s: float | None = None,
    normalize: bool = False,
) -> tuple[list[dict[str, Any]], LoadReport]:
    """Rows of a (non-streaming) Hugging Face dataset, filtered like manifest rows; audio is read lazily."""
    ds = open_hf_dataset(source, split, audio_column=audio_column)
    text_column = hf_text_column(ds, text_column)
    report, rows = LoadReport(f"{source} [{split}]"), []
    for i, (audio, text) in enumerate(zip(ds[audio_column], ds[text_column], strict=True)):
        text = _target(text, normalize)
        try:
            info = sf.info(io.BytesIO(audio["bytes"])) if audio.get("bytes") else sf.info(audio["path"])
            duration = info.frames / info.samplerate
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
            report.drop("unreadable audio")
            continue
        reason = _drop_reason(text, duration, min_duration_s, max_duration_s)
        if reason:
            report.drop(reason)
        else:
            rows.append({"id": f"{i}", "audio": HFAudio(ds, i, audio_column), "text": text, "duration": duration})
    report.kept = len(rows)
    return rows, report


def load_source(
    source: str | Path,
    split: str = "train",
    min_duration_s: float = 0.0,
    max_duration_s: float | None = None,
    text_field: str = "text",
    normalize: bool = False,
    audio_column: str = "audio",
    text_column: str | None = None,
) -> tuple[list[dict[str, Any]], LoadReport]:
    """Rows of a manifest, a folder, or a (non-streamed) Hugging Face dataset (`hf:NAME[:CONFIG[:SPLIT]]`)."""
    if str(source).startswith("hf:") or is_hf_source(source):
        return load_hf_rows(source, split, audio_column, text_column, min_duration_s, max_duration_s, normalize)
    return load_rows(source, min_duration_s, max_duration_s, text_field, normalize)


class StreamingSpeechDataset(torch.utils.data.IterableDataset):
    """A streamed Hugging Face dataset as training items (no length grouping, no feature cache)."""

    def __init__(self, ds: Any, audio_column: str, text_column: str, sample_rate: int = 16000, augmenter: Any = None):
        self.ds, self.audio_column, self.text_column = ds, audio_column, text_column
        self.sample_rate, self.augmenter = sample_rate, augmenter

    def __iter__(self):
        for example in self.ds:
            text = str(example[self.text_column] or "").strip()
            try:
                audio = load_audio(example[self.audio_column], target_rate=self.sample_rate)
            except AudioError:
                yield None
                continue
            if text:
                yield {"audio": self.augmenter(audio) if self.augmenter else audio, "text": text}


class SpeechDataset(torch.utils.data.Dataset):
    """Rows of (audio path, transcript). Items are {"audio": float32 16 kHz array, "text"}, or, with a feature
    cache, {"frames": float16 T, C encoder frames, "num_samples", "text"}; None when a file is unreadable (the
    collator drops those and counts them)."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        sample_rate: int = 16000,
        feature_cache: Any = None,
        augment: Any = None,
        waveform_augmenter: Any = None,
    ):
        self.rows = rows
        self.sample_rate = sample_rate
        self.feature_cache = feature_cache
        self.augment = augment  # an AugmentConfig: items are marked for masking in the collator
        self.waveform_augmenter = waveform_augmenter

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        row = self.rows[i]
        if self.feature_cache is not None:  # filled before training; a missing entry is an unreadable file
            cached = self.feature_cache.get(row["audio"])
            if cached is None:
                return None
            return {"frames": cached[0], "num_samples": cached[1], "text": row["text"], "augment": self.augment}
        try:
            audio = read_clip(row["audio"], self.sample_rate)
        except AudioError:
            return None
        if self.waveform_augmenter is not None:
            audio = self.waveform_augmenter(audio)
        return {"audio": audio, "text": row["text"], "augment": self.augment}

    @property
    def lengths(self) -> list[float]:
        """Durations, for length-grouped batching."""
        return [row["duration"] for row in self.rows]


class SpeechCollator:
    """Batch items into model inputs with the processor (right padding, labels on transcript tokens only).
    Items carrying cached encoder frames become audio_frames / audio_frame_lengths instead of audio features."""

    def __init__(self, processor: Any, seed: int = 0):
        self.processor = processor
        self.skipped = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, Any]:
        good = [item for item in items if item is not None]
        self.skipped += len(items) - len(good)
        if not good:
            raise RuntimeError(
                "every clip in this batch was unreadable; check the data with `tiny-audio data manifest`"
            )
        texts = [g["text"] for g in good]
        if all("frames" in g for g in good):
            lengths = [g["frames"].shape[0] for g in good]
            frames = torch.zeros(len(good), max(lengths), good[0]["frames"].shape[1])
            for i, g in enumerate(good):
                frames[i, : lengths[i]] = torch.from_numpy(g["frames"].astype(np.float32))
            batch = self.processor.text_inputs([g["num_samples"] for g in good], texts, padding_side="right")
            batch = {**batch, "audio_frames": frames, "audio_frame_lengths": torch.tensor(lengths)}
            return self._mask(batch, good, "audio_frames", batch["audio_frame_lengths"], time_axis=1)
        batch = dict(self.processor([g["audio"] for g in good], text=texts, padding_side="right"))
        return self._mask(batch, good, "input_features", batch["audio_attention_mask"].sum(-1), time_axis=-1)

    def _mask(self, batch: dict, items: list[dict], key: str, lengths: torch.Tensor, time_axis: int) -> dict:
        """SpecAugment-style masks on the items that ask for them (training items with masking on)."""
        config = items[0].get("augment")
        if config is None or not (config.time_masks or config.freq_masks):
            return batch
        from .augment import spec_augment

        batch[key] = spec_augment(batch[key], lengths, config, self.generator, time_axis)
        return batch
