"""The benchmark scripts stay runnable: the GPU one in its CPU smoke mode (tiny configs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "infer", "train-seed", "--tiny", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["default-design batched inference", "seed-size training step"]
    assert rows[0]["rtfx"] > 0 and rows[1]["samples_per_s"] > 0


def test_decode_step_benchmark_times_every_weight_format(tmp_path):
    out = tmp_path / "decode.json"
    script = ROOT / "benchmarks" / "decode_step.py"
    command = [sys.executable, str(script), "--layers", "1", "--steps", "1", "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["format"] for r in rows] == ["float32", "bfloat16", "int8-dynamic", "int8-weight-only"]
    # bfloat16 stores half of float32's bytes, int8 a quarter (plus the scales).
    assert rows[1]["weights_mb"] == rows[0]["weights_mb"] / 2
    assert all(r["ms_per_step"] > 0 for r in rows) and rows[3]["weights_mb"] < rows[1]["weights_mb"]
