"""The built-in default model shipped in the package: present, small, consistent with its recipe, and working.

These load the real offline backbones (Whisper base, SmolLM2-135M-Instruct), so they take a minute on a CPU.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tiny_audio import ASRModel
from tiny_audio.audio import BUNDLED_SAMPLE
from tiny_audio.evaluate import word_error_rate
from tiny_audio.model import DEFAULT_MODEL_DIR, WEIGHTS_NAME
from tiny_audio.presets import load_preset
from tiny_audio.transcribe import transcribe

JFK = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def default_model() -> ASRModel:
    return ASRModel.from_pretrained("default")


def test_shipped_files_are_small_and_match_the_recipe():
    folder = DEFAULT_MODEL_DIR
    assert (folder / WEIGHTS_NAME).stat().st_size < 40 * 2**20  # projector + LoRA only, float16
    config = json.loads((folder / "config.json").read_text())
    assert config["audio_model_id"] == "whisper-base" and config["text_model_id"] == "smollm2-135m-instruct"
    assert not config.get("base_weights_included")
    # The recipe beside the weights is the shipped chain of presets, each stage's evidence beside it: every stage
    # was trained with the preset named by its output folder (runs/default-stage2 -> `default-stage2`) and
    # continued (`training.init_from`) from a checkpoint of the stage before it.
    earlier = sorted(
        (folder / "training").glob("stage*_train_config.yaml"), key=lambda p: int(p.name[5:].split("_")[0])
    )
    stages = [yaml.safe_load(p.read_text()) for p in earlier] + [
        yaml.safe_load((folder / "train_config.yaml").read_text())
    ]
    assert Path(stages[0]["training"]["output_dir"]).name == "default" and not stages[0]["training"].get("init_from")
    for number, (before, shipped) in enumerate(zip([None, *stages], stages, strict=False), start=1):
        name = Path(shipped["training"]["output_dir"]).name
        preset = load_preset(name, [])
        for key in ("projector_stack_size", "projector_hidden_dim", "decoder_lora_rank", "decoder_lora_alpha"):
            assert shipped["model"][key] == preset["model"][key] == config[key], (name, key)
        for key in ("num_train_epochs", "learning_rate", "init_from"):
            assert shipped["training"][key] == preset["training"].get(key), (name, key)
        # A soup's members are earlier stages of this chain (stages saved before the setting existed have none).
        assert shipped["training"].get("average_with", []) == preset["training"].get("average_with", []), name
        for member in shipped["training"].get("average_with", []):
            assert Path(member).parent.name in {Path(s["training"]["output_dir"]).name for s in stages[: number - 1]}
        assert shipped["data"]["train"] == preset["data"]["train"], name
        assert {k: shipped["augment"][k] for k in preset["augment"]} == preset["augment"]  # recipes list defaults too
        if before is not None:
            assert Path(shipped["training"]["init_from"]).parent.name == Path(before["training"]["output_dir"]).name
            assert json.loads((folder / "training" / f"stage{number - 1}_log_history.json").read_text())
    history = json.loads((folder / "training" / "log_history.json").read_text())
    assert any("eval_loss" in h for h in history) and history[-1]["step"] > 0
    assert (folder / "training" / "curves.png").stat().st_size > 10_000
    assert list((folder / "training").glob("dev_*.json")), "the dev results of the shipped model"
    if config.get("ctc_head_dim"):  # trained after the stages by `tiny-audio ctc-head`: its log ships beside it
        log = json.loads((folder / "training" / "ctc_head_log.json").read_text())
        assert log[-1]["train_loss"] < log[0]["train_loss"]
    if config["generation_defaults"].get("ctc_lexicon_penalty"):  # the word list ships with its licence
        assert len((folder / "lexicon.txt").read_text().split()) > 50_000
        assert "Permission to use" in (folder / "lexicon_notice.txt").read_text()
    # The code copies in the folder (used by trust_remote_code) are today's code, not a stale snapshot.
    for copy in folder.glob("*.py"):
        source = DEFAULT_MODEL_DIR.parent / copy.name
        assert copy.read_text() == source.read_text(), f"{copy.name} is stale: rerun scripts/ship_default.py"


def test_main_command_transcribes_the_bundled_sample_offline():
    result = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "transcribe", str(BUNDLED_SAMPLE)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The shipped model gets this clip right (dev WER 21.3% overall); the bar leaves room for a word or two.
    assert word_error_rate([JFK], [result.stdout])["wer"] <= 0.1, result.stdout
    assert "ask not what your country can do for you" in result.stdout.lower()


def test_silence_and_low_noise_give_no_words(default_model):
    rng = np.random.default_rng(0)
    silence = np.zeros(10 * 16000, np.float32)
    noise = (0.01 * rng.standard_normal(10 * 16000)).astype(np.float32)  # -40 dBFS: passes the silence gate
    results = transcribe(default_model, [silence, noise])
    assert results[0].text == ""
    # At most one word, and no run of punctuation either (",,,,,," once passed as a single "word").
    assert len(re.findall(r"\w+", results[1].text)) <= 1 and len(results[1].text) <= 20, results[1].text


def test_transformers_pipeline_loads_the_shipped_folder(default_model):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(DEFAULT_MODEL_DIR), trust_remote_code=True)
    text = asr(str(BUNDLED_SAMPLE))["text"]
    assert text == transcribe(default_model, [BUNDLED_SAMPLE])[0].text


def test_model_card_lists_every_stage_of_the_recipe(tmp_path):
    from tiny_audio.hub import _stages, card_metadata

    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert card_metadata(card)["model-index"][0]["results"][0]["metrics"][0]["type"] == "wer"
    table = _stages(DEFAULT_MODEL_DIR)
    assert table and table in card, "ship_default.py writes the card with the stage table"
    earlier = len(list((DEFAULT_MODEL_DIR / "training").glob("stage*_train_config.yaml")))
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == earlier + 1
    shipped = yaml.safe_load((DEFAULT_MODEL_DIR / "train_config.yaml").read_text())["training"]
    if shipped.get("average_with"):
        assert "final = mean with" in rows[-1]
    assert _stages(tmp_path) == ""  # a one-stage model has no table


def test_ship_default_puts_a_trained_head_with_its_layers_in_place(make_model, tmp_path):
    # `ship_default.py --ctc-head` moves a head from `tiny-audio ctc-head`'s folder into the shipped one: a head
    # with Transformer layers must load there too, not only the convolutions' width.
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("ship_default", Path("scripts/ship_default.py"))
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    make_model("whisper", "llama", ctc_head_dim=16).save_pretrained(tmp_path / "shipped")
    (tmp_path / "shipped" / "training").mkdir()
    trained = make_model("whisper", "llama", ctc_head_dim=16, ctc_head_layers=1)
    trained.config.generation_defaults["ctc_head_weight"] = 0.2
    trained.save_pretrained(tmp_path / "head")
    (tmp_path / "head" / "ctc_head_log.json").write_text("[]\n")
    ship.add_ctc_head(tmp_path / "shipped", tmp_path / "head")
    loaded = ASRModel.from_pretrained(tmp_path / "shipped")
    assert len(loaded.ctc_head.layers) == 1 and loaded.config.generation_defaults["ctc_head_weight"] == 0.2
    for key, value in trained.ctc_head.state_dict().items():
        torch.testing.assert_close(loaded.ctc_head.state_dict()[key].float(), value, atol=2e-3, rtol=2e-3)
    assert (tmp_path / "shipped" / "training" / "ctc_head_log.json").is_file()
