"""The CTC prefix scorer's shared computations: joint decoding time with today's scorer against an earlier commit's.

    python benchmarks/scorer_sharing.py --against 2edae6c --clips 8 --rounds 2

Since 0c5f986 `CTCPrefixScorer.extend` computes each distinct (prefix, letters so far) once and copies the result
to the candidates that share it. This decodes the first `--clips` LibriSpeech dev clips in one batch with the
default model's own decoding (LM rescoring off, so that only the scorer differs), alternating today's `extend`
with the one of `--against` (read with `git show`), `--rounds` times each; prints the seconds of each run and the
ratio of the medians, and checks that both give the same transcripts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.ctc import CTCPrefixScorer
from tiny_audio.data import load_rows
from tiny_audio.model import ASRModel
from tiny_audio.transcribe import transcribe_arrays


def earlier_extend(commit: str):
    """`CTCPrefixScorer.extend` as it was at `commit`."""
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:tiny_audio/ctc.py"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"cannot read tiny_audio/ctc.py at {commit}: {getattr(err, 'stderr', err)}")
    module = types.ModuleType("earlier_ctc")
    module.__dict__["__name__"] = "earlier_ctc"
    sys.modules["earlier_ctc"] = module  # dataclasses and NamedTuples look their module up
    exec(compile(source.replace("from .", "from tiny_audio."), f"{commit}:ctc.py", "exec"), module.__dict__)
    return module.CTCPrefixScorer.extend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="2edae6c", help="the commit whose scorer to compare with")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    rows, _ = load_rows(shared_data(args.data) / "dev")
    arrays = [load_audio(r["audio"], target_rate=16000) for r in rows if "Libri" in r["source"]][: args.clips]
    model = ASRModel.from_pretrained("default").for_inference()
    variants = {"today": CTCPrefixScorer.extend, args.against: earlier_extend(args.against)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    texts = {}
    for _ in range(args.rounds):
        for name, extend in variants.items():
            CTCPrefixScorer.extend = extend
            start = time.perf_counter()
            out = transcribe_arrays(model, arrays, batch_size=len(arrays), lm_rescore_weight=0.0)
            seconds[name].append(time.perf_counter() - start)
            texts[name] = [t.text for t in out]
            print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    CTCPrefixScorer.extend = variants["today"]
    same = texts["today"] == texts[args.against]
    ratio = statistics.median(seconds[args.against]) / statistics.median(seconds["today"])
    print(f"{len(arrays)} clips, same transcripts: {same}; {args.against} / today (median seconds): {ratio:.2f}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
