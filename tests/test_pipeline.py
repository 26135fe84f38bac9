"""ASRPipeline in process and through transformers.pipeline(..., trust_remote_code=True) in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny_audio import ASRPipeline, AudioError
from tiny_audio.testing import tone


@pytest.fixture
def saved_model(make_model, tmp_path):
    model = make_model("whisper", "qwen3")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_pipeline_inputs_options_and_batching(saved_model, tmp_path):
    model, _ = saved_model
    pipe = ASRPipeline(model=model, device="cpu")
    clip = tone(1.2)
    sf.write(tmp_path / "c.flac", clip, 16000)
    expected = pipe(clip, max_new_tokens=5)["text"]
    assert pipe(str(tmp_path / "c.flac"), max_new_tokens=5)["text"] == expected
    assert pipe((tmp_path / "c.flac").read_bytes(), max_new_tokens=5)["text"] == expected
    assert pipe({"array": clip, "sampling_rate": 16000}, max_new_tokens=5)["text"] == expected
    assert pipe(np.stack([clip, clip]), max_new_tokens=5)["text"] == expected  # stereo mixed down
    # Options pass through: one new token is at most one token of text.
    one = pipe(clip, max_new_tokens=1)["text"]
    assert len(model.processor.tokenizer(one, add_special_tokens=False)["input_ids"]) <= 1
    assert pipe(clip, generate_kwargs={"max_new_tokens": 5})["text"] == expected
    assert pipe(clip, max_new_tokens=5, ilm_weight=0.0)["text"] == expected
    assert pipe(clip, max_new_tokens=5, ilm_weight=3.0)["text"] != expected  # the decoder's prior taken out
    # List inputs run in batches and match one-at-a-time results.
    others = [tone(0.7, 300, seed=4), tone(1.9, 500, seed=5)]
    one_by_one = [pipe(x, max_new_tokens=5)["text"] for x in [clip, *others]]
    assert [r["text"] for r in pipe([clip, *others], batch_size=2, max_new_tokens=5)] == one_by_one
    with pytest.raises(TypeError, match="unknown option"):
        pipe(clip, max_new_tokns=5)
    with pytest.raises(AudioError, match="zero length"):
        pipe(np.zeros(0, dtype=np.float32))


FRESH = """
import json, sys
sys.modules["tiny_audio"] = None  # the package must not be needed
import numpy as np, torch
from transformers import AutoModel, pipeline
folder, wav = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
pipe = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True, device="cpu")
batch = model.processor([wav], text=["hello"], padding_side="right")
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({"text": pipe(wav, max_new_tokens=5)["text"], "logits_sum": float(logits.double().sum())}))
"""


def test_fresh_process_loads_without_tiny_audio(saved_model, tmp_path):
    model, folder = saved_model
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(1.3), 16000)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH), str(folder), str(wav)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,  # any trust prompt would fail instead of waiting
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Do you wish to run the custom code" not in result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    pipe = ASRPipeline(model=model, device="cpu")
    assert got["text"] == pipe(str(wav), max_new_tokens=5)["text"]
    batch = model.processor([str(wav)], text=["hello"], padding_side="right")
    with torch.no_grad():
        expected = float(model(**batch).logits.double().sum())
    assert got["logits_sum"] == pytest.approx(expected, rel=1e-6)


def test_relative_backbone_folders_load_from_another_directory(backbones, tmp_path, monkeypatch):
    from pathlib import Path

    from tiny_audio import ASRConfig, ASRModel

    audio_dir, text_dir = backbones("hubert", "llama")
    monkeypatch.chdir(Path(audio_dir).parent)
    model = ASRModel(ASRConfig(audio_model_id=Path(audio_dir).name, text_model_id=Path(text_dir).name))
    model.save_pretrained(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    assert ASRModel.from_pretrained(tmp_path / "m").config.audio_model_id == str(Path(audio_dir).resolve())


HANDLER = """
import base64, json, sys
sys.path.insert(0, sys.argv[1])
from handler import EndpointHandler

handler = EndpointHandler(sys.argv[1])
audio = open(sys.argv[2], "rb").read()
out = {
    "bytes": handler({"inputs": audio, "parameters": {"max_new_tokens": 5}}),
    "base64": handler({"inputs": base64.b64encode(audio).decode(), "parameters": {"max_new_tokens": 5}}),
    "list": handler({"inputs": [audio, audio], "parameters": {"max_new_tokens": 5, "return_timestamps": True}}),
    "tiny_audio_imported": any(m == "tiny_audio" or m.startswith("tiny_audio.") for m in sys.modules),
}
for bad in ({"inputs": "not base64!"}, {"parameters": {}}, {"inputs": b"not audio"}):
    try:
        handler(bad)
    except ValueError as err:
        out.setdefault("errors", []).append(str(err))
print(json.dumps(out))
"""


def test_saved_folder_carries_an_endpoint_handler(saved_model, tmp_path):
    model, folder = saved_model
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone(1.3), 16000)
    assert (folder / "handler.py").is_file()
    result = subprocess.run(
        [sys.executable, "-c", HANDLER, str(folder), str(wav)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    expected = ASRPipeline(model=model, device="cpu")(str(wav), max_new_tokens=5)["text"]
    assert out["bytes"] == out["base64"] == {"text": expected}
    assert [r["text"] for r in out["list"]] == [expected, expected] and out["list"][0]["chunks"][0]["timestamp"]
    assert not out["tiny_audio_imported"]  # the stock endpoint container has only transformers
    assert len(out["errors"]) == 3 and "base64" in out["errors"][0] and "no audio" in out["errors"][1]
    assert "not a readable audio file" in out["errors"][2]
