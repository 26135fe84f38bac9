"""Speech data: manifests, folders with .txt transcripts, drop counts, normalization, `tiny-audio data manifest`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from tiny_audio.data import load_rows, scan_folder
from tiny_audio.testing import tone


def make_folder(tmp_path):
    folder = tmp_path / "speech"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", tone(1.0), 16000)
    (folder / "a.txt").write_text("Mr. Smith paid $20.\n")
    sf.write(folder / "sub" / "b.flac", tone(0.5), 16000)
    (folder / "sub" / "b.txt").write_text("hello")
    sf.write(folder / "orphan.wav", tone(0.5), 16000)  # no transcript
    (folder / "broken.wav").write_text("not audio")
    (folder / "broken.txt").write_text("x")
    return folder


def test_folder_with_transcripts_becomes_rows(tmp_path):
    rows, report = scan_folder(make_folder(tmp_path))
    assert [(r["audio"], r["text"], r["duration"]) for r in rows] == [
        ("a.wav", "Mr. Smith paid $20.", 1.0),
        ("sub/b.flac", "hello", 0.5),
    ]
    assert report.dropped == {"audio files without a .txt transcript": 1, "unreadable audio files": 1}
    normalized, _ = load_rows(make_folder(tmp_path / "again"), normalize=True)
    assert normalized[0]["text"] == "mister smith paid $20"


def test_data_manifest_command_builds_then_checks(tmp_path):
    folder = make_folder(tmp_path)
    build = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "data", "manifest", str(folder)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    assert (
        "kept 0, dropped 1 audio files without a .txt transcript, 1 unreadable audio files; wrote 2 rows"
        in build.stdout
    )
    lines = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    check = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "data", "manifest", str(folder)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "kept 2, dropped none; 0.00 h of audio" in check.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "tiny_audio", "data", "manifest", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def test_text_overlap_flags_an_evaluation_transcript_found_in_training_text(tmp_path):
    script = Path(__file__).parent.parent / "scripts" / "text_overlap.py"
    train = tmp_path / "sentences.txt"
    train.write_text("It was the best of times, it was the worst of times.\nA short line.\n")
    dev = tmp_path / "dev.jsonl"
    rows = [{"audio": "a.wav", "text": "AND IT WAS THE BEST OF TIMES IT WAS THE WORST OF TIMES INDEED"},
            {"audio": "b.wav", "text": "It was the best of days, it was the worst of nights."}]  # fmt: skip
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = [sys.executable, str(script), "--train", str(train), "--eval", str(dev)]
    leaked = subprocess.run(run, capture_output=True, text=True)
    assert leaked.returncode == 1 and "1 of 2 evaluation transcripts" in leaked.stdout and "INDEED" in leaked.stdout
    clean = subprocess.run([*run[:-1], str(dev), "-n", "13"], capture_output=True, text=True)
    assert clean.returncode == 0 and "0 of 2" in clean.stdout
    missing = subprocess.run([*run[:3], str(tmp_path / "nope.txt"), *run[4:]], capture_output=True, text=True)
    assert missing.returncode == 1 and "not found" in missing.stderr
