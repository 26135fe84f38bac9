"""Speech data: locating the project's shared data folder and reading JSONL manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared speech data (TINY_AUDIO_DATA, else ../shared/data beside the checkout), or None if absent."""
    candidates = [
        os.environ.get("TINY_AUDIO_DATA"),
        REPO_ROOT.parent / "shared" / "data",
        Path.cwd() / "../shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "dev" / "manifest.jsonl").is_file():
            return Path(candidate).resolve()
    return None


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest, with `audio` made absolute (it is relative to the manifest's folder)."""
    path = Path(path)
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["audio"] = str(path.parent / row["audio"])
            rows.append(row)
    return rows
