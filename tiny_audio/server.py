"""An OpenAI-compatible transcription server: `tiny-audio serve`, or `create_app(model)` for your own ASGI host.

    POST /v1/audio/transcriptions   multipart: file, model, response_format (json|text|srt|vtt|verbose_json),
                                    temperature, language, prompt (accepted, unused)
    GET  /v1/models                 the one model served
    GET  /health                    status and counters (requests, batches, queue)

Clients written for OpenAI's API work unchanged (`OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)`);
any `model` name is answered by the loaded model, as with other local servers, so code written for
"whisper-1" runs as is. Requests that arrive together are transcribed together: one worker thread owns the
model and takes up to `batch_size` waiting requests per batch (waiting at most `max_wait_ms` for company).
Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, and never stop the server.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request) at run time.
import asyncio
import concurrent.futures
import contextlib
import hmac
import io
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audio import AudioError, load_audio
from .transcribe import Transcript, format_transcript, transcribe_arrays

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
ENGLISH = {"en", "eng", "english"}


@dataclass
class ServerConfig:
    """How the server runs; `tiny-audio serve` options map onto these fields."""

    host: str = "127.0.0.1"  # loopback unless told otherwise: nothing is exposed by accident
    port: int = 8000
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    model_name: str = "tiny-audio"  # the id /v1/models reports
    batch_size: int = 8
    max_wait_ms: float = 10.0
    max_upload_mb: float = 25.0  # OpenAI's own limit
    max_audio_s: float = 3600.0


@dataclass
class _Job:
    audio: np.ndarray
    options: dict[str, Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Batcher:
    """One thread owns the model; concurrent requests with the same generation options run as one batch."""

    def __init__(self, model: Any, batch_size: int = 8, max_wait_ms: float = 10.0):
        self.model, self.batch_size, self.max_wait = model, max(batch_size, 1), max_wait_ms / 1000
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.requests = self.batches = 0
        self.thread = threading.Thread(target=self._run, name="tiny-audio-batcher", daemon=True)
        self.thread.start()

    def submit(self, audio: np.ndarray, **options: Any) -> concurrent.futures.Future:
        job = _Job(audio, options)
        self.jobs.put(job)
        return job.future

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _take(self) -> list[_Job] | None:
        first = self.jobs.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.batch_size:
            try:
                job = self.jobs.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)  # finish this batch, then stop
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            groups: dict[str, list[_Job]] = {}
            for job in batch:
                groups.setdefault(repr(sorted(job.options.items())), []).append(job)
            for jobs in groups.values():
                self.batches += 1
                self.requests += len(jobs)
                try:
                    results = transcribe_arrays(
                        self.model, [j.audio for j in jobs], batch_size=self.batch_size, **jobs[0].options
                    )
                except Exception as err:  # a failed batch fails its requests, not the server
                    for job in jobs:
                        job.future.set_exception(err)
                    continue
                for job, result in zip(jobs, results, strict=True):
                    job.future.set_result(result)


class RequestError(Exception):
    """A bad request: answered with `status` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 413: "invalid_request_error", 500: "server_error"}.get(
        status, "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def decode_upload(data: bytes, name: str, rate: int, max_audio_s: float) -> np.ndarray:
    """Uploaded bytes -> mono float32 at `rate`; length is checked from the header before decoding when possible."""
    import soundfile as sf

    if not data:
        raise RequestError(400, f"{name}: empty upload (0 bytes)", "file", "empty_file")
    try:
        info = sf.info(io.BytesIO(data))
        if info.samplerate and info.frames / info.samplerate > max_audio_s:
            seconds = info.frames / info.samplerate
            raise RequestError(
                400, f"{name}: audio is {seconds:.0f} s long; this server takes at most {max_audio_s:g} s",
                "file", "audio_too_long",
            )  # fmt: skip
    except RequestError:
        raise
    except Exception:  # noqa: BLE001 - no readable header: load_audio below gives the precise reason
        pass
    try:
        audio = load_audio(data, target_rate=rate)
    except AudioError as err:
        message = str(err).replace("audio bytes", name, 1)
        raise RequestError(400, f"could not decode the upload: {message}", "file", "invalid_audio") from None
    if len(audio) / rate > max_audio_s:
        raise RequestError(
            400, f"{name}: audio is {len(audio) / rate:.0f} s long; this server takes at most {max_audio_s:g} s",
            "file", "audio_too_long",
        )  # fmt: skip
    return audio


def render(result: Transcript, response_format: str, temperature: float) -> tuple[Any, str]:
    """(body, media type) for an OpenAI response_format."""
    if response_format == "json":
        return {"text": result.text}, "application/json"
    if response_format == "text":
        return result.text + "\n", "text/plain; charset=utf-8"
    if response_format in ("srt", "vtt"):
        return format_transcript(result, response_format), "text/plain; charset=utf-8"
    segments = [
        {"id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [], "temperature": temperature}
        for i, s in enumerate(result.segments)
        if s.text
    ]
    body = {
        "task": "transcribe",
        "language": "english",
        "duration": result.duration,
        "text": result.text,
        "segments": segments,
    }
    return body, "application/json"


def create_app(model: Any, config: ServerConfig | None = None) -> Any:
    """The FastAPI application serving `model` (an ASRModel); the batching thread starts with it."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    config = config or ServerConfig()
    batcher = Batcher(model, config.batch_size, config.max_wait_ms)
    rate = model.config.sample_rate
    started = int(time.time())
    limit_bytes = int(config.max_upload_mb * 1024 * 1024)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        batcher.close()

    app = FastAPI(title="Tiny Audio", version=_version(), docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.batcher = batcher

    def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        return JSONResponse(_error_body(message, status, param, code), status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, err: RequestError) -> JSONResponse:
        return error(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", where, "invalid_request")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        # Checked from the headers, before any of the body is read: a refused upload costs the server nothing.
        if config.api_key and request.url.path.startswith("/v1/") and not _key_matches(request, config.api_key):
            return error(401, "missing or wrong API key (send Authorization: Bearer <key>)", None, "invalid_api_key")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit_bytes:
            return error(413, f"upload is {int(length) / 1e6:.1f} MB; the limit is {config.max_upload_mb:g} MB")
        try:
            return await call_next(request)
        except Exception as err:  # noqa: BLE001 - one failed request must not take the server down
            return error(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": config.model_name,
            "requests": batcher.requests,
            "batches": batcher.batches,
            "queue": batcher.jobs.qsize(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": config.model_name, "object": "model", "created": started, "owned_by": "tiny-audio"}
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name}")
    async def model_info(name: str) -> dict[str, Any]:
        return {"id": config.model_name, "object": "model", "created": started, "owned_by": "tiny-audio"}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        form = await request.form(max_files=1, max_fields=20, max_part_size=limit_bytes)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "no audio: send the audio as the multipart field 'file'", "file", "missing_file")
        response_format = str(form.get("response_format") or "json")
        if response_format not in RESPONSE_FORMATS:
            raise RequestError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "response_format")
        language = str(form.get("language") or "en").lower()
        if language not in ENGLISH:
            raise RequestError(400, f"this model transcribes English only, not language {language!r}", "language")
        try:
            temperature = float(form.get("temperature") or 0.0)
        except ValueError:
            raise RequestError(400, "temperature must be a number", "temperature") from None
        if not 0.0 <= temperature <= 2.0:
            raise RequestError(400, "temperature must be between 0 and 2", "temperature")
        data = await upload.read()
        if len(data) > limit_bytes:  # a chunked upload has no Content-Length to check up front
            raise RequestError(413, f"upload is {len(data) / 1e6:.1f} MB; the limit is {config.max_upload_mb:g} MB")
        name = upload.filename or "upload"
        audio = await asyncio.to_thread(decode_upload, data, name, rate, config.max_audio_s)
        options: dict[str, Any] = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        result = await asyncio.wrap_future(batcher.submit(audio, **options))
        body, media_type = render(result, response_format, temperature)
        if media_type == "application/json":
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=media_type)

    return app


def _key_matches(request: Any, key: str) -> bool:
    sent = request.headers.get("authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {key}".encode())


def _version() -> str:
    from . import __version__

    return __version__


def serve(model: Any, config: ServerConfig) -> None:
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(create_app(model, config), host=config.host, port=config.port, log_level="info")
