"""Model soups: one model whose trained weights are the (weighted) mean of several runs' weights.

Runs that continue from one starting point (a stage and the one it started from, or two seeds of one stage) stay
close enough in weight space that their mean is a model of its own, often better than each (Wortsman et al.,
"Model soups", 2022). Only the trained tensors (projector and LoRA) are averaged; each LoRA factor on its own, as
`training.average_with` does, which is near the mean of the updates while the factors stay close. Check a soup on
dev before trusting it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .backbones import file_sha256
from .hub import STAGE_FILES, TRAINER_FILES, model_folder
from .model import WEIGHTS_NAME, _resolve_folder

# Settings that decide what the trained tensors mean: two folders that differ in one of these cannot be averaged
# even when their tensors have the same names and shapes (e.g. another LoRA alpha scales the same factors
# differently). Decoding settings (beams, chunk length) may differ: the soup takes the first folder's.
_ARCHITECTURE_PREFIXES = ("audio_model_id", "text_model_id", "projector_", "encoder_lora_", "decoder_lora_")
_ARCHITECTURE_KEYS = ("base_weights_included", "audio_token_id")
# Files about how the first model was made (its card, recipe, log, trainer state), which would misdescribe the soup.
_NOT_COPIED = (WEIGHTS_NAME, "soup.json", "README.md", *STAGE_FILES.values(), *TRAINER_FILES)


State = dict[str, torch.Tensor]


def average_states(states: list[State], weights: list[float] | None = None) -> State:
    """The weighted mean of state dicts with the same tensors, in float32 then cast back to the first's dtypes.

    `weights` (positive, one a state) are normalised to sum to 1; the plain mean when None.
    """
    if not states:
        raise ValueError("nothing to average")
    weights = [1.0] * len(states) if weights is None else list(weights)
    if len(weights) != len(states):
        raise ValueError(f"{len(weights)} weights for {len(states)} models: give one weight a model")
    if any(w <= 0 for w in weights):
        raise ValueError(f"weights must be positive, got {weights}")
    total = sum(weights)
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        if set(state) != set(first):
            differ = sorted(set(state) ^ set(first))
            raise ValueError(f"model {index + 1} has other trained tensors than model 1 (e.g. {differ[:3]})")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"{key}: shape {tuple(value.shape)} in model {index + 1}, {tuple(first[key].shape)} in model 1"
                )
    return {
        key: sum(state[key].float() * (w / total) for state, w in zip(states, weights, strict=True)).to(value.dtype)
        for key, value in first.items()
    }


def _architecture(config: dict) -> dict:
    return {
        key: value
        for key, value in config.items()
        if key in _ARCHITECTURE_KEYS or key.startswith(_ARCHITECTURE_PREFIXES)
    }


def average_models(folders: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Write to `out` a saved model whose trained weights are the weighted mean of those in `folders` (saved
    models, checkpoints or training runs; "default" for the built-in model).

    The config, processor files and model code are the first folder's (not its card, recipe or log).
    `out/soup.json` records the sources, their weights and the SHA-256 of each source's weights file, so the soup
    can be made again.
    """
    if len(folders) < 2:
        raise ValueError("give at least two model folders to average")
    # "default" is the built-in model, a hub id is downloaded, a training run's folder means its final model.
    folders = [model_folder(_resolve_folder(folder)) for folder in folders]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder")
    configs = [json.loads((folder / "config.json").read_text()) for folder in folders]
    for folder, config in zip(folders[1:], configs[1:], strict=True):
        ours, theirs = _architecture(configs[0]), _architecture(config)
        if ours != theirs:
            differ = sorted(key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key))
            raise ValueError(f"{folder} is another architecture than {folders[0]} (differs in {', '.join(differ)})")
    weights = [1.0] * len(folders) if weights is None else list(weights)
    mean = average_states([load_file(str(folder / WEIGHTS_NAME)) for folder in folders], weights)
    record = {
        "sources": [
            {"folder": str(folder), "weight": w / sum(weights), "sha256": file_sha256(folder / WEIGHTS_NAME)}
            for folder, w in zip(folders, weights, strict=True)
        ]
    }
    # Written beside `out` and renamed at the end: a stop half-way (full disk, Ctrl-C) leaves no half model there.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for path in folders[0].iterdir():
            if path.is_file() and not path.name.startswith(_NOT_COPIED):
                shutil.copy2(path, partial / path.name)
        save_file(mean, str(partial / WEIGHTS_NAME), metadata={"format": "pt"})
        (partial / "soup.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
