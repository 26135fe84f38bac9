"""The OpenAI-compatible server, started for real on a free localhost port and called with the official `openai`
client (good requests) and raw HTTP (bad ones)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from tiny_audio import ASRModel
from tiny_audio.testing import free_port, tone, wait_until_up
from tiny_audio.transcribe import transcribe

openai = pytest.importorskip("openai", reason="the openai client is in the dev extra")
pytest.importorskip("fastapi", reason="the server needs the serve extra")

KEY = "test-key"


def talkative(model: ASRModel) -> ASRModel:
    """The tiny random model says the same token whatever it hears, until the length cap. So: no blank or
    partial-byte tokens, and a cap of 4 tokens a second (+8): answers then differ with the clip's length, and a
    mix-up between the requests of one batch would show."""
    tokenizer = model.processor.tokenizer
    unreadable = [
        i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip() or "\ufffd" in tokenizer.decode([i])
    ]
    model.config.generation_defaults = {
        **model.config.generation_defaults,
        "max_new_tokens_per_second": 4,
        "suppress_tokens": [*unreadable, model.config.audio_token_id],
    }
    return model


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(make_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served") / "m"
    talkative(make_model()).save_pretrained(folder)
    port = free_port()
    command = [
        sys.executable, "-m", "tiny_audio", "serve", "--model", str(folder), "--port", str(port),
        "--max-upload-mb", "0.2", "--max-audio-s", "5", "--max-wait-ms", "200", "--name", "tiny-test",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env={**os.environ, "TINY_AUDIO_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base + "/health", proc, timeout_s=60)
    yield base, folder
    proc.terminate()
    proc.wait(timeout=30)


def health(base: str) -> dict:
    with urllib.request.urlopen(base + "/health", timeout=5) as r:
        return json.loads(r.read())


def post(base: str, fields: dict, file: tuple[str, bytes] | None, key: str | None = KEY) -> tuple[int, dict | str]:
    """A multipart POST to /v1/audio/transcriptions by hand: (status, parsed body)."""
    boundary = "tinyaudioboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    if file is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + file[1] + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base + "/v1/audio/transcriptions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get("content-type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def test_openai_client_formats_models_and_batched_concurrent_requests(server):
    base, folder = server
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
    clips = [tone(0.5 + 0.4 * i, 200 + 60 * i, seed=i) for i in range(8)]
    expected = [t.text for t in transcribe(ASRModel.from_pretrained(folder), clips)]
    assert len(set(expected)) == 8  # different clips, different texts: a mix-up would show

    assert [m.id for m in client.models.list()] == ["tiny-test"]
    first = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(clips[0])))
    assert first.text == expected[0]
    text = client.audio.transcriptions.create(
        model="tiny-test", file=("a.wav", wav_bytes(clips[0])), response_format="text"
    )
    assert text.strip() == expected[0]
    verbose = client.audio.transcriptions.create(
        model="tiny-test", file=("a.wav", wav_bytes(clips[0])), response_format="verbose_json", language="en"
    )
    assert verbose.text == expected[0] and abs(verbose.duration - 0.5) < 0.01 and verbose.language == "english"
    srt = client.audio.transcriptions.create(
        model="tiny-test", file=("a.wav", wav_bytes(clips[0])), response_format="srt"
    )
    vtt = client.audio.transcriptions.create(
        model="tiny-test", file=("a.wav", wav_bytes(clips[0])), response_format="vtt"
    )
    if expected[0]:
        assert srt.startswith("1\n00:00:00,000 --> ") and expected[0] in srt
    assert vtt.startswith("WEBVTT")

    before = health(base)

    def call(i: int) -> str:
        own = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
        return own.audio.transcriptions.create(model="tiny-test", file=(f"{i}.wav", wav_bytes(clips[i]))).text

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    after = health(base)
    assert answers == expected  # batched with strangers, each gets its own transcript
    assert after["requests"] - before["requests"] == 8 and after["batches"] - before["batches"] < 8


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server):
    base, _ = server
    good = wav_bytes(tone(1.0, 300))
    cases = [
        ({"model": "m"}, ("x.wav", b"RIFF\x00\x00garbage" * 50), 400, "could not decode the upload"),
        ({"model": "m"}, ("x.wav", b""), 400, "empty upload"),
        ({"model": "m"}, None, 400, "multipart field 'file'"),
        ({"model": "m"}, ("long.wav", wav_bytes(np.zeros(16000 * 6, np.float32))), 400, "at most 5 s"),
        ({"model": "m"}, ("big.wav", wav_bytes(tone(7.0, 300))), 413, "the limit is 0.2 MB"),
        ({"model": "m", "response_format": "docx"}, ("a.wav", good), 400, "response_format must be one of"),
        ({"model": "m", "language": "fr"}, ("a.wav", good), 400, "English only"),
        ({"model": "m", "temperature": "hot"}, ("a.wav", good), 400, "temperature must be a number"),
    ]
    for fields, file, status, message in cases:
        got, body = post(base, fields, file)
        assert got == status, (fields, body)
        assert isinstance(body, dict) and message in body["error"]["message"], body
    assert post(base, {"model": "m"}, ("a.wav", good), key=None)[0] == 401
    assert post(base, {"model": "m"}, ("a.wav", good), key="wrong")[0] == 401
    assert health(base)["status"] == "ok"  # /health needs no key
    status, body = post(base, {"model": "m"}, ("a.wav", good))
    assert status == 200 and "text" in body
