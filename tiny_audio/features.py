"""Frozen-encoder feature cache: encoder frames computed once per clip, stored as float16, reused across epochs
and runs.

Valid while the audio tower does not train and the waveform is not augmented. Entries live under
<cache>/features/<encoder fingerprint>/, where the fingerprint covers the encoder's config, its feature
extractor settings and every weight of the tower (LoRA included), so a different or further-trained encoder
never reads stale frames. A clip's entry is keyed by the SHA-256 of the file's bytes, so a copied, moved or
re-downloaded dataset (new paths, new modification times, same audio) keeps its entries, and an edited file gets a new
one. Each file is hashed once per process (remembered by path, size and modification time). Each entry is written to
a temporary file and renamed, so a killed run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .audio import AudioError
from .backbones import cache_dir, file_sha256
from .data import read_clip
from .encoder import encode_audio, layer_index
from .processor import MIN_SAMPLES


def encoder_fingerprint(model: Any, upto: int | None = None) -> str:
    """SHA-256 over the audio tower's config, feature settings and weights; with `upto`, over the weights that
    make the hidden states after that many layers only (the layers above may train)."""
    digest = hashlib.sha256()
    digest.update(model.config.audio_config.to_json_string(use_diff=False).encode())
    digest.update(model.processor.feature_extractor.to_json_string().encode())
    digest.update(f"min_samples={MIN_SAMPLES}".encode())
    if upto is not None:
        digest.update(f"upto={upto}".encode())
    for name, tensor in sorted(model.audio_tower.state_dict().items()):
        if upto is not None and not _below(name, upto):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def _below(name: str, upto: int) -> bool:
    """Whether a tower weight acts before layer `upto`: the layers below it and the input side, not the final norm."""
    index = layer_index(name)
    if index is not None:
        return index < upto
    return not name.split(".")[-2].endswith("layer_norm")


class FeatureCache:
    """Encoder frames of audio files for one encoder state; with `upto`, the hidden states after the encoder's
    first `upto` layers (for training the layers above, see ASRModel.audio_frames_layer)."""

    def __init__(self, model: Any, root: str | Path | None = None, upto: int | None = None):
        self.model = model
        self.upto = upto
        self.folder = Path(root or cache_dir() / "features") / encoder_fingerprint(model, upto)[:20]
        self._digests: dict[tuple[str, int, int], str] = {}

    def path_for(self, audio_path: Any) -> Path:
        # A row of a Hugging Face dataset has its own key; a file is known by its bytes.
        ident = getattr(audio_path, "cache_key", None) or f"sha256:{self._file_digest(audio_path)}"
        key = hashlib.sha256(ident.encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npz"

    def _file_digest(self, audio_path: str | Path) -> str:
        # Looked up once per epoch per clip: the stat keeps that cheap, and catches a file edited mid-run.
        stat = os.stat(audio_path)
        seen = (str(Path(audio_path).resolve()), stat.st_size, stat.st_mtime_ns)
        if seen not in self._digests:
            self._digests[seen] = file_sha256(audio_path)
        return self._digests[seen]

    def get(self, audio_path: str | Path) -> tuple[np.ndarray, int] | None:
        """(frames T, C float16, number of audio samples), or None when not cached."""
        path = self.path_for(audio_path)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return data["frames"], int(data["num_samples"])

    def fill(self, audio_paths: list[str], batch_size: int = 8, progress: bool = True) -> tuple[int, int]:
        """Compute and store the frames of every path not cached yet; returns (computed, unreadable)."""
        missing = [p for p in dict.fromkeys(audio_paths) if not self.path_for(p).is_file()]
        if not missing:
            return 0, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        processor, tower = self.model.processor, self.model.audio_tower
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        unreadable = 0
        with (
            torch.no_grad(),
            tqdm(total=len(missing), desc="encoder features", unit="clip", disable=not progress) as bar,
        ):
            for start in range(0, len(missing), batch_size):
                paths, arrays = [], []
                for path in missing[start : start + batch_size]:
                    try:
                        arrays.append(read_clip(path, self.model.config.sample_rate))
                        paths.append(path)
                    except AudioError:
                        unreadable += 1
                bar.update(len(missing[start : start + batch_size]) - len(paths))
                if not paths:
                    continue
                feats = processor.audio_features(arrays)
                frames, lengths = encode_audio(
                    tower,
                    feats["input_features"].to(device, next(tower.parameters()).dtype),
                    feats["audio_attention_mask"].sum(-1).to(device),
                    upto=self.upto,
                )
                for path, array, f, n in zip(paths, arrays, frames, lengths, strict=True):
                    self._write(path, f[: int(n)].to(torch.float16).cpu().numpy(), len(array))
                bar.update(len(paths))
        tower.train(was_training)
        return len(missing) - unreadable, unreadable

    def _write(self, audio_path: str, frames: np.ndarray, num_samples: int) -> None:
        target = self.path_for(audio_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, frames=frames, num_samples=np.asarray(num_samples))
        os.replace(tmp, target)
