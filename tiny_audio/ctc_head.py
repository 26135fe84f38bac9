"""Training the character CTC head of a finished model (see tiny_audio/ctc.py) on its frozen encoder's frames.

The head is trained on its own, after the projector and LoRA: nothing else changes, so it reads the encoder
frames from the feature cache, and an epoch over a few hours of audio takes minutes on a CPU. The model's text
output changes only where joint decoding is switched on (generation_defaults["ctc_head_weight"]).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import make_silence_clips
from .backbones import cache_dir
from .ctc import CHARS, CTCHead, spell
from .encoder import EncoderTop
from .features import FeatureCache


def _clips(cache: FeatureCache, rows: list[dict[str, Any]]) -> list[tuple[np.ndarray, list[int]]]:
    cache.fill([row["audio"] for row in rows])
    clips = []
    for row in rows:
        got = cache.get(row["audio"])
        target = spell(row["text"])
        # An unreadable clip teaches nothing, nor a text with no letters ("1455": the head has no digits); an empty
        # text (a silence or noise clip) teaches the blank.
        if got is not None and (target or not row["text"].strip()):
            clips.append((got[0], target))
    return clips


def head_clips(model: Any, rows: list[dict[str, Any]]) -> list[tuple[np.ndarray, list[int]]]:
    """The frames `model`'s CTC head reads for each row (from the feature cache: the encoder's output, or the hidden
    states below the head's own copy of the top layers) with the row's letters, as `train_ctc_head` prepares them."""
    top = model.ctc_head.top
    return _clips(FeatureCache(model) if top is None else FeatureCache(model, upto=top.start), rows)


def loss_per_char(head: CTCHead, clips: list, max_frames: int = 12000) -> float:
    """The head's summed CTC loss over `clips` divided by their characters: the dev loss of the training log."""
    with torch.no_grad():
        return sum(float(head.loss(*batch)) for batch in _batches(clips, max_frames)) / sum(len(t) for _, t in clips)


def _batches(clips: list, max_frames: int, rng: random.Random | None = None):
    """Batches of clips of similar length, at most max_frames padded frames each; shuffled when rng is given."""
    order = sorted(range(len(clips)), key=lambda i: len(clips[i][0]))
    groups, group = [], []
    for i in order:
        if group and (len(group) + 1) * len(clips[i][0]) > max_frames:
            groups.append(group)
            group = []
        group.append(i)
    if group:
        groups.append(group)
    if rng is not None:
        rng.shuffle(groups)
    for group in groups:
        frames = [torch.from_numpy(clips[i][0].astype(np.float32)) for i in group]
        yield (
            nn.utils.rnn.pad_sequence(frames, batch_first=True),
            torch.tensor([len(f) for f in frames]),
            [clips[i][1] for i in group],
        )


def greedy_text(log_probs: torch.Tensor) -> str:
    """Best-path decoding of one clip's T, V log-probabilities."""
    text, last = [], 0
    for i in log_probs.argmax(-1).tolist():
        if i not in (last, 0):
            text.append(CHARS[i - 1])
        last = i
    return " ".join("".join(text).split())


def train_ctc_head(
    model: Any,
    train_rows: list[dict[str, Any]],
    dev_rows: list[dict[str, Any]] | None = None,
    epochs: int = 12,
    learning_rate: float = 2e-3,
    hidden_dim: int = 384,
    layers: int = 0,
    silence_share: float = 0.05,
    max_frames: int = 12000,
    seed: int = 0,
    warm_start: bool = False,
    encoder_layers: int = 0,
    encoder_learning_rate: float = 1e-4,
    cache: FeatureCache | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Give `model` a new CTC head (config.ctc_head_dim = hidden_dim) trained on rows {audio, text}; returns the
    per-epoch log (training and dev loss per character, dev character-level greedy WER of the head alone).

    `silence_share` adds clips of silence and quiet noise with an empty text, as a share of the training rows: a
    head that never heard them spells letters in noise ("sais i iss gn uu"), and joint decoding then writes words
    into a silent clip.

    `warm_start` trains on from the model's own head (it must have one of this width and depth) instead of a fresh
    one: new data for a head whose earlier data is gone, at a lower learning rate.

    `encoder_layers` gives the head its own copy of the (Whisper) encoder's top layers and final norm, fine-tuned
    with it at `encoder_learning_rate` (the encoder itself and the LLM's frames stay as they are). Started from a
    head without one (`warm_start`), the copy begins as the encoder's own layers, so training starts from exactly
    the model's head. Its input, the hidden states below the copied layers, comes from the feature cache.

    `cache` gives the encoder frames the head reads (default: the model's encoder output, or with `encoder_layers`
    the hidden states below them, cached on disk)."""
    from jiwer import wer

    own = getattr(model, "ctc_head", None)
    own_top = 0 if own is None else model.config.ctc_head_encoder_layers
    if warm_start and (
        own is None
        or (model.config.ctc_head_dim, model.config.ctc_head_layers) != (hidden_dim, layers)
        or own_top not in (0, encoder_layers)
    ):
        have = "none" if own is None else f"width {model.config.ctc_head_dim} with {model.config.ctc_head_layers}"
        raise ValueError(
            f"--warm-start needs the model's own head of width {hidden_dim} with {layers} layers (and no copy of "
            f"encoder layers, or {encoder_layers}); it has {have}"
            + (f" and a copy of {own_top} encoder layers" if own_top else "")
        )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    top = EncoderTop.from_tower(model.audio_tower, encoder_layers) if encoder_layers else None
    if cache is None:
        cache = FeatureCache(model, upto=top.start) if top is not None else FeatureCache(model)
    elif top is not None and cache.upto != top.start:
        raise ValueError(f"a head with a copy of the top {encoder_layers} layers reads a cache with upto={top.start}")
    if silence_share > 0:
        count = round(silence_share * len(train_rows))
        train_rows = [*train_rows, *make_silence_clips(cache_dir() / "silence", count, seed=seed)]
    train = _clips(cache, train_rows)
    dev = _clips(cache, dev_rows or [])
    if not train:
        raise ValueError("no training clip could be read with a transcript that has letters")
    log(f"CTC head: {len(train)} training clips, {len(dev)} dev clips")
    head = CTCHead(model.config.audio_config.hidden_size, hidden_dim, layers=layers, encoder_top=top)
    if warm_start:
        # A head without the copy leaves the copy as the encoder's own layers.
        got = head.load_state_dict({k: v.float() for k, v in own.state_dict().items()}, strict=False)
        if got.unexpected_keys or any(not k.startswith("top.") or own_top for k in got.missing_keys):
            raise ValueError(f"the model's head does not fit the new one: {got}")
    model.config.ctc_head_dim, model.config.ctc_head_layers = hidden_dim, layers
    model.config.ctc_head_encoder_layers = encoder_layers
    steps = epochs * sum(1 for _ in _batches(train, max_frames))
    groups = [{"params": [p for n, p in head.named_parameters() if not n.startswith("top.")], "lr": learning_rate}]
    if top is not None:
        groups.append({"params": list(top.parameters()), "lr": encoder_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [g["lr"] for g in groups], total_steps=steps, pct_start=0.1
    )
    history = []
    for epoch in range(1, epochs + 1):
        start, total, chars = time.time(), 0.0, 0
        head.train()
        for frames, lengths, targets in _batches(train, max_frames, rng):
            # Two masked spans per clip, each up to 5% of it (SpecAugment's time masks): the head may not lean
            # on any one stretch of frames.
            for row, n in zip(frames, lengths.tolist(), strict=True):
                for _ in range(2):
                    width = rng.randint(0, max(1, n // 20))
                    at = rng.randint(0, max(0, n - width))
                    row[at : at + width] = 0
            loss = head.loss(frames, lengths, targets)
            count = max(1, sum(len(t) for t in targets))  # a batch of silence clips has no characters
            optimizer.zero_grad()
            (loss / count).backward()
            nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            chars += count
        entry = {"epoch": epoch, "train_loss": total / chars, "seconds": round(time.time() - start, 1)}
        if dev:
            head.eval()
            with torch.no_grad():
                entry["dev_loss"] = loss_per_char(head, dev, max_frames)
                hyps = [greedy_text(head(torch.from_numpy(f.astype(np.float32))[None])[0]) for f, _ in dev]
            entry["dev_greedy_wer"] = wer(["".join(CHARS[i - 1] for i in t) for _, t in dev], hyps)
        history.append(entry)
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    head.eval()
    model.ctc_head = head
    return history
