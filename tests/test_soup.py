"""Model soups: `tiny-audio average` writes the weighted mean of runs' trained weights as a model of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tiny_audio.model import ASRModel
from tiny_audio.soup import average_models
from tiny_audio.testing import tone


def saved(make_model, folder, seed, **overrides):
    """A tiny saved model whose trained tensors (projector and LoRA, B included) are random for `seed`."""
    model = make_model(**{"decoder_lora_rank": 2, **overrides})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.named_parameters():
            if name in model.trained_state_dict():
                value.copy_(torch.randn(value.shape, generator=generator) * 0.05)
    model.save_pretrained(folder)
    return folder


def test_average_writes_the_weighted_mean_and_a_loadable_model(make_model, tmp_path):
    a, b = saved(make_model, tmp_path / "a", 1), saved(make_model, tmp_path / "b", 2)
    out = average_models([a, b], tmp_path / "soup", weights=[3, 1])
    first, second, mean = (load_file(str(p / "model.safetensors")) for p in (a, b, out))
    assert mean.keys() == first.keys() and any(".lora_B." in key for key in mean)
    for key in mean:
        torch.testing.assert_close(mean[key], 0.75 * first[key] + 0.25 * second[key])
    record = json.loads((out / "soup.json").read_text())
    assert [s["weight"] for s in record["sources"]] == [0.75, 0.25]
    assert all(len(s["sha256"]) == 64 for s in record["sources"])
    model = ASRModel.from_pretrained(out)  # config, processor and code came from the first folder
    for key, value in model.trained_state_dict().items():
        torch.testing.assert_close(value, mean[key])
    proc = model.processor
    assert model.generate(**proc([tone(1.0)]), max_new_tokens=3).shape[0] == 1
    assert not (tmp_path / "soup.partial").exists()
    (a / "README.md").write_text("card of model a")  # a's card, recipe and log would misdescribe the soup
    (a / "train_config.yaml").write_text("recipe of model a")
    again = average_models([a, b], tmp_path / "soup2")
    assert not (again / "README.md").exists() and not (again / "train_config.yaml").exists()


def test_average_refuses_what_cannot_be_averaged_and_writes_nothing(make_model, tmp_path):
    a, b = saved(make_model, tmp_path / "a", 1), saved(make_model, tmp_path / "b", 2)
    other_alpha = saved(make_model, tmp_path / "alpha", 3, decoder_lora_alpha=4)  # same shapes, other meaning
    other_rank = saved(make_model, tmp_path / "rank", 4, decoder_lora_rank=4, decoder_lora_alpha=32)
    with pytest.raises(ValueError, match="decoder_lora_alpha"):
        average_models([a, other_alpha], tmp_path / "x")
    with pytest.raises(ValueError, match="architecture"):
        average_models([a, other_rank], tmp_path / "x")
    with pytest.raises(ValueError, match="one weight a model"):
        average_models([a, b], tmp_path / "x", weights=[1.0])
    with pytest.raises(ValueError, match="positive"):
        average_models([a, b], tmp_path / "x", weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least two"):
        average_models([a], tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        average_models([a, tmp_path], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        average_models([a, b], b)  # never over a model
    assert load_file(str(b / "model.safetensors")).keys() == load_file(str(a / "model.safetensors")).keys()


def test_average_command_reports_a_mistake_in_one_line(make_model, tmp_path):
    a, b = saved(make_model, tmp_path / "a", 1), saved(make_model, tmp_path / "b", 2)

    def cli(*args):
        command = [sys.executable, "-m", "tiny_audio", "average", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    done = cli(str(a), str(b), "--out", str(tmp_path / "soup"))
    assert done.returncode == 0, done.stderr
    assert "averaged 2 models" in done.stdout and (tmp_path / "soup" / "model.safetensors").is_file()
    again = cli(str(a), str(b), "--out", str(tmp_path / "soup"))
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
