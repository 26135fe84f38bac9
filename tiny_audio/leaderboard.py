"""A leaderboard from evaluation results: Markdown table, HTML page and a WER-against-RTFx plot.

    tiny-audio leaderboard eval/ --output-dir leaderboard/

Input: results.json files written by `tiny-audio eval` (or folders holding them). Students add a row by
sending their results.json; the fields read are listed in SUBMISSION_FIELDS (docs: README, "Leaderboard").
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

SUBMISSION_FIELDS = {
    "model": "model name, hub id or folder",
    "data": "the evaluation set (manifest path or hf:NAME:CONFIG:SPLIT)",
    "wer": "corpus WER (0-1) after Whisper's English normalizer",
    "rtfx": "audio seconds / wall seconds",
    "parameters": "total parameters (optional)",
    "date": "ISO date of the run",
    "code_version": "tiny-audio git commit or version",
    "device": "what it ran on",
}


def collect(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every results.json under the given files or folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("results.json")) if p.is_dir() else [p])
    results = []
    for f in files:
        data = json.loads(f.read_text())
        missing = [k for k in ("model", "wer", "rtfx") if k not in data]
        if missing:
            raise ValueError(f"{f}: not a Tiny Audio results file (missing {', '.join(missing)})")
        results.append(data)
    if not results:
        raise FileNotFoundError("no results.json found in " + ", ".join(map(str, paths)))
    return results


def set_name(data: str) -> str:
    """A short column name for an evaluation set."""
    parts = [p for p in str(data).replace(":", "/").split("/") if p and p not in ("manifest.jsonl", "hf")]
    return "/".join(parts[-2:]) if parts else "data"


def table(results: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (evaluation sets) and one row per model, ranked by mean WER over the sets it was run on."""
    sets = sorted({set_name(r.get("data", "")) for r in results})
    models: dict[str, dict[str, Any]] = {}
    for r in results:
        row = models.setdefault(r["model"], {"model": r["model"], "wer": {}, "rtfx": [], "date": "", "code": ""})
        row["wer"][set_name(r.get("data", ""))] = r["wer"]
        row["rtfx"].append(r["rtfx"])
        row["parameters"] = r.get("parameters")
        row["date"] = max(row["date"], r.get("date", ""))
        row["code"] = r.get("code_version", "") or row["code"]
    rows = list(models.values())
    for row in rows:
        row["mean_wer"] = sum(row["wer"].values()) / len(row["wer"])
        row["mean_rtfx"] = sum(row["rtfx"]) / len(row["rtfx"])
    rows.sort(key=lambda r: r["mean_wer"])
    return sets, rows


def _cells(row: dict[str, Any], sets: list[str]) -> list[str]:
    wer = [f"{100 * row['wer'][s]:.2f}" if s in row["wer"] else "-" for s in sets]
    params = f"{row['parameters'] / 1e6:.0f}M" if row.get("parameters") else "-"
    return [*wer, f"{row['mean_rtfx']:.1f}", params, row["date"][:10], row["code"] or "-"]


def markdown(sets: list[str], rows: list[dict[str, Any]]) -> str:
    head = ["rank", "model", *[f"WER % {s}" for s in sets], "RTFx", "parameters", "date", "code"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, row in enumerate(rows, 1):
        lines.append("| " + " | ".join([str(rank), row["model"], *_cells(row, sets)]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        ax.scatter(row["mean_rtfx"], 100 * row["mean_wer"], s=40)
        ax.annotate(row["model"][-28:], (row["mean_rtfx"], 100 * row["mean_wer"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.15)  # room for the labels
    ax.set_xlabel("RTFx (audio seconds per wall second, log scale; right is faster)")
    ax.set_ylabel("mean WER % (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def page(sets: list[str], rows: list[dict[str, Any]], image: str) -> str:
    head = ["rank", "model", *[f"WER % {s}" for s in sets], "RTFx", "parameters", "date", "code"]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [rank, row["model"], *_cells(row, sets)]) + "</tr>"
        for rank, row in enumerate(rows, 1)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tiny Audio leaderboard</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.35rem .6rem;text-align:right}}td:nth-child(2){{text-align:left}}
th{{background:#f4f4f4}}</style></head>
<body><h1>Tiny Audio leaderboard</h1>
<p>WER after Whisper's English text normalizer on reference and hypothesis; RTFx = audio seconds / wall seconds.
Ranked by mean WER over the sets each model was evaluated on.</p>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead><tbody>{body}</tbody></table>
<p><img src="{html.escape(image)}" alt="WER against RTFx" width="700"></p>
</body></html>
"""


def build(paths: list[str | Path], output_dir: Path) -> str:
    """Write leaderboard.md, index.html and leaderboard.png; returns the Markdown."""
    sets, rows = table(collect(paths))
    output_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(sets, rows)
    (output_dir / "leaderboard.md").write_text(text)
    plot(rows, output_dir / "leaderboard.png")
    (output_dir / "index.html").write_text(page(sets, rows, "leaderboard.png"))
    return text
