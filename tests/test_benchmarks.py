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
