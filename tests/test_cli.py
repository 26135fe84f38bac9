"""The tiny-audio command: info numbers, clear one-line errors, transcribe with good and bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import soundfile as sf

from tiny_audio.testing import tone


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiny_audio", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_info_seed_prints_the_reference_numbers():
    result = run("info", "--preset", "seed")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3,932,160" in out  # encoder LoRA r=16 on q,k of HuBERT-XLarge
    assert "3,833,856" in out  # decoder LoRA r=8 on q,v of Qwen3-8B
    assert "138,422,528" in out  # projector: 6400 -> 8192 -> 4096 SwiGLU + norms
    assert "trainable 146.2M of 9.30B" in out
    assert "Traceback" not in result.stderr


def test_info_json_and_overrides():
    result = run("info", "--preset", "seed", "projector_hidden_dim=2048", "decoder_lora_rank=0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["projector"]["total"] == 2 * 6400 * 2048 + 2048 * 4096 + 6400 + 4096
    assert report["language_model"]["lora"] == 0
    assert report["audio_tower"]["lora"] == 3_932_160


def test_info_default_preset_and_saved_folder(make_model, tmp_path):
    assert run("info", "--preset", "default").returncode == 0
    model = make_model("hubert", "llama")
    model.save_pretrained(tmp_path / "m")
    result = run("info", str(tmp_path / "m"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == model.parameter_report()


def test_user_mistakes_are_one_line_errors(tmp_path):
    for args, message in [
        (("info", "--preset", "nope"), "no preset or YAML file 'nope'"),
        (("info", "--preset", "seed", "projector_hidden_dim"), "not of the form key=value"),
        (("info", str(tmp_path)), "not a saved Tiny Audio model folder"),
        (("transcribe", "x.wav", "--model", str(tmp_path / "missing")), "cannot load model"),
    ]:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_transcribe_reports_bad_files_and_still_runs_the_good_ones(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "good.flac", tone(1.0), 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio")
    result = run(
        "transcribe",
        str(tmp_path / "good.flac"),
        str(tmp_path / "empty.wav"),
        str(tmp_path / "text.mp3"),
        str(tmp_path / "missing.ogg"),
        "--model",
        str(tmp_path / "m"),
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith(str(tmp_path / "good.flac"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    assert "Traceback" not in result.stderr
