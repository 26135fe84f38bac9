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
    top = run("info", "--preset", "seed", "encoder_lora_layers=[0,47]", "--json")  # 2 of HuBERT-XLarge's 48 layers
    assert json.loads(top.stdout)["audio_tower"]["lora"] == 3_932_160 * 2 // 48
    wrong = run("info", "--preset", "seed", "encoder_lora_layers=[48]")
    assert wrong.returncode != 0 and "the encoder has layers 0 to 47" in wrong.stderr


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
        (("data", "speed", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "sp")), "data not found"),
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


def test_transcribe_stream_prints_the_same_text_as_a_batch(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "a.flac", tone(2.5, 300), 16000)
    common = ["transcribe", str(tmp_path / "a.flac"), "--model", str(tmp_path / "m"), "--max-new-tokens", "5"]
    streamed, batch = run(*common, "--stream", "--chunk-length-s", "1.5"), run(*common, "--chunk-length-s", "1.5")
    assert streamed.returncode == 0 and batch.returncode == 0, streamed.stderr + batch.stderr
    assert streamed.stdout == batch.stdout
    bad = run(*common, "--stream", "--format", "srt")
    assert bad.returncode == 2 and "--stream prints plain text" in bad.stderr


def test_transcribe_takes_the_rescoring_weights(make_model, tmp_path):
    from tiny_audio.ctc import CTCHead

    model = make_model()
    model.config.ctc_head_dim = 16
    model.ctc_head = CTCHead(model.config.audio_config.hidden_size, 16)
    model.config.generation_defaults.update(num_beams=3, ctc_head_weight=0.2)
    model.save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "a.flac", tone(1.5, 300), 16000)
    common = ["transcribe", str(tmp_path / "a.flac"), "--model", str(tmp_path / "m"), "--max-new-tokens", "5"]
    result = run(*common, "--lm-rescore-weight", "0.3", "--ctc-rescore-weight", "0.5")
    assert result.returncode == 0, result.stderr
    negative = run(*common, "--ctc-rescore-weight", "-1")
    assert negative.returncode == 2 and "Traceback" not in negative.stderr


def test_transcribe_formats_and_output_dir(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "a.flac", tone(1.0), 16000)
    sf.write(tmp_path / "b.wav", tone(2.5, 300), 16000)
    out = tmp_path / "out"
    for fmt in ("txt", "json", "srt", "vtt"):
        result = run(
            "transcribe",
            str(tmp_path),
            "--model",
            str(tmp_path / "m"),
            "--format",
            fmt,
            "--output-dir",
            str(out),
            "--max-new-tokens",
            "3",
            "--chunk-length-s",
            "1.5",
        )
        assert result.returncode == 0, result.stderr
    data = json.loads((out / "b.json").read_text())
    assert data["file"].endswith("b.wav") and data["duration"] == 2.5
    spans = [(s["start"], s["end"]) for s in data["segments"]]
    # Windows are cut at the quietest point before 1.5 s, so they tile the clip without gaps or overlap.
    assert len(spans) == 2 and spans[0][0] == 0.0 and spans[-1][1] == 2.5 and spans[0][1] == spans[1][0]
    assert all(0 < end - start <= 1.5 for start, end in spans)
    assert (out / "a.vtt").read_text().startswith("WEBVTT")
    assert {p.name for p in out.iterdir()} >= {"a.txt", "b.txt", "a.srt", "b.srt"}
    bad = run("transcribe", str(tmp_path / "a.flac"), "--model", str(tmp_path / "m"), "--format", "docx")
    assert bad.returncode == 2 and "--format must be one of" in bad.stderr


def test_transcribe_precision_option(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "a.flac", tone(1.0), 16000)
    common = ["transcribe", str(tmp_path / "a.flac"), "--model", str(tmp_path / "m"), "--max-new-tokens", "3"]
    for precision in ("bfloat16", "int8"):
        result = run(*common, "--precision", precision)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    bad = run(*common, "--precision", "fp8")
    assert bad.returncode == 2 and "--precision must be one of float32, bfloat16, int8" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_models_prepare_prints_the_folder_last_and_doctor_passes(tmp_path):
    import os

    env_cache = os.environ["TINY_AUDIO_CACHE"]
    listing = run("models")
    assert listing.returncode == 0 and "whisper-base" in listing.stdout and "smollm2-135m-instruct" in listing.stdout
    prepared = run("models", "prepare", "whisper-tiny.en")
    assert prepared.returncode == 0, prepared.stderr
    assert prepared.stdout.strip().splitlines()[-1] == f"{env_cache}/backbones/whisper-tiny.en"
    unknown = run("models", "prepare", "whisper-huge")
    assert unknown.returncode == 2 and "unknown backbone 'whisper-huge'" in unknown.stderr
    doctor = run("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "[ok  ] backbone whisper-tiny.en" in doctor.stdout and "all checks passed" in doctor.stdout
