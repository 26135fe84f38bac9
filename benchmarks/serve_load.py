"""Load test of `tiny-audio serve` on localhost: throughput, latency percentiles, errors and server memory.

    python benchmarks/serve_load.py --requests 200 --concurrency 8            # the built-in default model
    python benchmarks/serve_load.py --model path/to/model --max-wait-ms 20

Starts the real server in a subprocess on a free 127.0.0.1 port, then sends `--requests` transcription requests
(dev clips from ../shared/data, or TINY_AUDIO_DATA, cycled) from `--concurrency` client threads with the `openai`
client, and once more with the server's batching turned off (--batch-size 1) for comparison. Every valid request
must succeed: the error count is printed and the exit code is 1 if it is not 0. Writes JSON beside the table.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import soundfile as sf
from _shared import shared_data

from tiny_audio.testing import free_port, wait_until_up


def dev_clips(data: Path | None, count: int) -> list[tuple[str, bytes]]:
    from tiny_audio.data import load_rows

    folder = shared_data(data)
    rows, _ = load_rows(folder / "dev")
    spread = rows[:: max(len(rows) // count, 1)][:count]  # over the sources, not the first speaker
    return [(Path(row["audio"]).name, Path(row["audio"]).read_bytes()) for row in spread]


def start_server(model: str | None, port: int, batch_size: int, max_wait_ms: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "tiny_audio", "serve", "--port", str(port), "--batch-size", str(batch_size)]
    command += ["--max-wait-ms", str(max_wait_ms)] + (["--model", model] if model else [])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, timeout_s=300)
    except RuntimeError as err:
        sys.exit(str(err))
    return proc


def rss_mb(proc: subprocess.Popen) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def run_load(port: int, clips: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> tuple[float, str | None]:
        name, data = clips[i % len(clips)]
        start = time.perf_counter()
        try:
            client.audio.transcriptions.create(model="tiny-audio", file=(name, data))
            return time.perf_counter() - start, None
        except Exception as err:  # noqa: BLE001 - counted and reported
            return time.perf_counter() - start, f"{type(err).__name__}: {err}"

    one(0)  # warm-up, not counted
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    errors = [e for _, e in results if e]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        health = json.loads(r.read())
    return {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "batches": health["batches"],
        "mean_batch": round(health["requests"] / max(health["batches"], 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or hub id (default: the built-in model)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--clips", type=int, default=32, help="distinct dev clips to cycle through")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--data", type=Path, help="shared data folder (default ../shared/data or TINY_AUDIO_DATA)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = parser.parse_args()
    clips = dev_clips(args.data, args.clips)
    audio_s = 0.0

    for _, data in clips:
        info = sf.info(io.BytesIO(data))
        audio_s += info.frames / info.samplerate
    rows = []
    for label, batch in (("batched", args.batch_size), ("one at a time", 1)):
        port = free_port()
        proc = start_server(args.model, port, batch, args.max_wait_ms)
        try:
            before = rss_mb(proc)
            result = run_load(port, clips, args.requests, args.concurrency)
            after = rss_mb(proc)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rows.append(
            {
                "server": label,
                "batch_size": batch,
                **result,
                "rss_before_mb": round(before),
                "rss_after_mb": round(after),
            }
        )
    mean_clip = audio_s / len(clips)
    print(f"tiny-audio serve load test: {args.requests} requests, concurrency {args.concurrency}, "
          f"{len(clips)} dev clips (mean {mean_clip:.1f} s), {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} CPUs")  # fmt: skip
    print(f"{'server':<15}{'req/s':>8}{'audio s/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}{'mean batch':>12}"
          f"{'RSS before':>12}{'RSS after':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['server']:<15}{r['requests_per_s']:>8}{r['requests_per_s'] * mean_clip:>11.1f}{r['p50_ms']:>9}"
              f"{r['p95_ms']:>9}{r['errors']:>8}{r['mean_batch']:>12}{r['rss_before_mb']:>10} MB"
              f"{r['rss_after_mb']:>8} MB")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"command": " ".join(sys.argv), "mean_clip_s": mean_clip, "runs": rows}, indent=2)
    )
    print(f"wrote {args.output}")
    if any(r["errors"] for r in rows):
        print("errors:", *(r["first_error"] for r in rows if r["errors"]), sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
