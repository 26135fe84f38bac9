"""`tiny-audio eval`, logging each transcript window that `cut_repetition` shortens: the raw repetition loops,
which the written transcripts no longer show (the loop is cut to one copy, the words it replaced stay lost).

    python scripts/eval_loops.py runs/raw-loops.jsonl eval --model default \
        --data ../shared/data/dev/manifest.jsonl --output-dir runs/eval-loops --batch-size 8

The log gets one {"raw", "cut"} line per shortened window; no file means none was.
"""

import json
import sys
from pathlib import Path

import tiny_audio.transcribe as transcribe
from tiny_audio.cli import main

_cut = transcribe.cut_repetition


def _logged(log: Path):
    def cut_repetition(text: str, *args, **kwargs) -> str:
        out = _cut(text, *args, **kwargs)
        if out != text:
            with log.open("a") as f:
                f.write(json.dumps({"raw": text, "cut": out}) + "\n")
        return out

    return cut_repetition


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    transcribe.cut_repetition = _logged(Path(sys.argv[1]))
    sys.argv = ["tiny-audio", *sys.argv[2:]]
    main()
