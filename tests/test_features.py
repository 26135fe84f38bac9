"""The frozen-encoder feature cache: same inputs as encoding live, reuse across runs, keyed by encoder state."""

from __future__ import annotations

import shutil

import soundfile as sf
import torch

from tiny_audio.data import SpeechCollator, SpeechDataset
from tiny_audio.features import FeatureCache
from tiny_audio.testing import tone


def rows_for(tmp_path, n=4):
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(0.6 + 0.3 * i, 200 + 50 * i, seed=i), 16000)
        rows.append({"audio": str(path), "text": f"clip {i}", "duration": 0.6 + 0.3 * i})
    return rows


def test_cached_frames_give_the_same_loss_as_live_encoding(make_model, tmp_path):
    model = make_model("whisper", "llama", encoder_lora_rank=0)
    rows = rows_for(tmp_path)
    cache = FeatureCache(model, root=tmp_path / "cache")
    assert cache.fill([r["audio"] for r in rows], batch_size=3, progress=False) == (4, 0)
    collator = SpeechCollator(model.processor)
    live = collator([SpeechDataset(rows)[i] for i in range(4)])
    cached = collator([SpeechDataset(rows, feature_cache=cache)[i] for i in range(4)])
    assert "audio_frames" in cached and "input_features" not in cached
    torch.testing.assert_close(cached["input_ids"], live["input_ids"])
    with torch.no_grad():
        a, b = model(**live), model(**cached)
    torch.testing.assert_close(a.loss, b.loss, atol=2e-3, rtol=2e-3)  # frames are stored as float16


def test_reused_across_runs_and_invalidated_by_a_different_encoder(make_model, tmp_path):
    model = make_model("hubert", "qwen3", encoder_lora_rank=0)
    paths = [r["audio"] for r in rows_for(tmp_path)]
    first = FeatureCache(model, root=tmp_path / "cache")
    assert first.fill(paths, progress=False) == (4, 0)
    again = FeatureCache(model, root=tmp_path / "cache")
    assert again.folder == first.folder and again.fill(paths, progress=False) == (0, 0)
    # The same audio copied elsewhere (new paths, new modification times) is found, not encoded again.
    moved = tmp_path / "moved"
    moved.mkdir()
    copies = [str(shutil.copy(p, moved)) for p in paths]
    assert again.fill(copies, progress=False) == (0, 0)
    assert again.path_for(copies[1]) == again.path_for(paths[1])
    with torch.no_grad():
        next(model.audio_tower.parameters()).add_(0.01)  # a further-trained encoder
    changed = FeatureCache(model, root=tmp_path / "cache")
    assert changed.folder != first.folder and changed.fill(paths, progress=False) == (4, 0)
    # An edited file is a new entry.
    sf.write(paths[0], tone(2.0, 100), 16000)
    assert changed.get(paths[0]) is None


def test_unreadable_files_are_counted_not_fatal(make_model, tmp_path):
    model = make_model("whisper", "qwen3", encoder_lora_rank=0)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    paths = [r["audio"] for r in rows_for(tmp_path, 2)] + [str(bad)]
    cache = FeatureCache(model, root=tmp_path / "cache")
    assert cache.fill(paths, progress=False) == (2, 1)
    assert SpeechDataset([{"audio": str(bad), "text": "x", "duration": 1}], feature_cache=cache)[0] is None


def test_a_cache_below_the_trained_top_layers_matches_live_encoding_and_outlives_their_training(make_model, tmp_path):
    model = make_model("whisper", "llama", encoder_lora_rank=2, encoder_lora_layers=[1])
    adapted = {n.split(".lora_")[0] for n, _ in model.audio_tower.named_parameters() if "lora_" in n}
    assert adapted and all(".layers.1." in n for n in adapted)  # no adapter below the top layer
    with torch.no_grad():  # a trained adapter, so the top layer's output depends on it
        for name, param in model.audio_tower.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    rows = rows_for(tmp_path)
    cache = FeatureCache(model, root=tmp_path / "cache", upto=1)
    assert cache.fill([r["audio"] for r in rows], batch_size=3, progress=False) == (4, 0)
    collator = SpeechCollator(model.processor)
    live = collator([SpeechDataset(rows)[i] for i in range(4)])
    cached = collator([SpeechDataset(rows, feature_cache=cache)[i] for i in range(4)])
    with torch.no_grad():
        a = model(**live)
        model.audio_frames_layer = 1  # the layer above the cached hidden states runs in the model
        b = model(**cached)
        model.audio_frames_layer = None
        c = model(**cached)  # read as the encoder's output they would be wrong
    torch.testing.assert_close(a.loss, b.loss, atol=2e-3, rtol=2e-3)
    assert abs(float(a.loss) - float(c.loss)) > 1e-2
    # Training the top layer (adapter or weights) keeps the entries; a change below it does not.
    with torch.no_grad():
        for name, param in model.audio_tower.named_parameters():
            if ".layers.1." in name or name.endswith("layer_norm.weight") and ".layers." not in name:
                param.add_(0.01)
    assert FeatureCache(model, root=tmp_path / "cache", upto=1).folder == cache.folder
    assert FeatureCache(model, root=tmp_path / "cache").folder != cache.folder  # the full-encoder cache differs
    with torch.no_grad():
        next(p for n, p in model.audio_tower.named_parameters() if ".layers.0." in n).add_(0.01)
    assert FeatureCache(model, root=tmp_path / "cache", upto=1).folder != cache.folder
