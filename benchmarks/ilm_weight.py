"""Internal-LM subtraction: decode with log p(y | audio) - w log p(y | no audio), for a few weights w, side by side.

    python benchmarks/ilm_weight.py --weight 0 --weight 0.1 --weight 0.2 --num-beams 1   # all of dev, greedy

The decoder of the default model paraphrases ("occasionally" for "sometimes"): its text prior outweighs the audio.
Subtracting a share of what the decoder predicts without the audio (`ilm_weight`, a generation option of
`ASRModel.generate`) discounts that prior. Each weight is a `tiny-audio eval` run of its own (resumable, in
--output-dir/ilm-W-beamsN); prints WER by source and RTFx per weight and writes JSON.
"""

from __future__ import annotations

import argparse
import json

from _shared import add_sweep_options, shared_data, wer_summary

from tiny_audio.data import load_rows
from tiny_audio.evaluate import run_evaluation
from tiny_audio.peers import TinyAudioRecognizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="Tiny Audio model (default: the built-in one)")
    parser.add_argument("--weight", type=float, action="append", help="ilm_weight to try; repeatable (default 0, 0.2)")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--clips", type=int, help="Only the first N dev clips")
    add_sweep_options(parser, "ilm-weight")
    args = parser.parse_args()
    folder = shared_data(args.data)
    rows, _ = load_rows(folder / "dev")
    rows = rows[: args.clips] if args.clips else rows

    report = {"model": args.model, "num_beams": args.num_beams, "clips": len(rows), "weights": {}}
    for weight in args.weight or [0.0, 0.2]:
        recognizer = TinyAudioRecognizer(args.model, num_beams=args.num_beams, ilm_weight=weight)
        recognizer.name += f" (ilm {weight:g})"
        out = args.output_dir / f"ilm-{weight:g}-beams{args.num_beams}"
        result = run_evaluation(recognizer, rows, out, batch_size=args.batch_size, data_name=str(folder / "dev"))
        report["weights"][f"{weight:g}"] = wer_summary(result)
        print(f"ilm_weight={weight:g}: {report['weights'][f'{weight:g}']}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
