"""Joint CTC / LLM decoding: the default model at a few CTC head weights and beam sizes, side by side.

    python benchmarks/ctc_weight.py --weight 0 --weight 0.3 --weight 0.5 --num-beams 1 --num-beams 4 --every 2

`ctc_head_weight` (a generation option of `ASRModel.generate`, see tiny_audio/ctc.py) trades the LLM's fluency
against the CTC head's spelling of the audio. Each (weight, beams) pair is a `tiny-audio eval` run of its own
(resumable, in --output-dir/ctc-W-beamsN); prints WER by source and RTFx for each and writes JSON. `--every K`
takes every K-th dev clip, so a quick sweep still covers each source. `--head-temperature T` decodes with the head's
logits divided by T (a calibration that needs no retraining; suffix -tT), and `--head-loss` reports the head's CTC
loss per character on the same clips at each temperature, to see where it is calibrated.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path

import torch
from _shared import add_sweep_options, shared_data, wer_summary

from tiny_audio import load_model
from tiny_audio.ctc import Lexicon
from tiny_audio.ctc_head import head_clips, loss_per_char
from tiny_audio.data import load_rows
from tiny_audio.evaluate import run_evaluation
from tiny_audio.peers import TinyAudioRecognizer


def soften(head: torch.nn.Module, temperature: float) -> None:
    """Make this head instance read its logits divided by `temperature` (the search and the rescoring both see it).
    A head that is over- or under-confident is calibrated this way without retraining; the log-softmax of
    log-probabilities over T equals that of the logits over T."""
    plain = head.forward
    head.forward = lambda *args, **kwargs: (plain(*args, **kwargs) / temperature).log_softmax(-1)


def head_loss(model_name: str, rows: list[dict], temperatures: list[float]) -> dict[str, float]:
    """The CTC head's loss per character on `rows` at each temperature: where it is lowest the head is calibrated."""
    model = load_model(model_name)
    if model.ctc_head is None:
        sys.exit(f"{model_name} has no CTC head to measure (train one with `tiny-audio ctc-head`)")
    clips = head_clips(model, rows)
    losses = {}
    for temperature in temperatures:
        head = copy.deepcopy(model.ctc_head).eval()
        if temperature != 1:
            soften(head, temperature)
        losses[f"{temperature:g}"] = round(loss_per_char(head, clips), 4)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="Tiny Audio model with a CTC head (default: built-in)")
    parser.add_argument("--weight", type=float, action="append", help="ctc_head_weight; repeatable (default 0.3)")
    parser.add_argument("--num-beams", type=int, action="append", help="beam size; repeatable (default 4)")
    parser.add_argument("--every", type=int, default=1, help="Every K-th dev clip (default all)")
    parser.add_argument(
        "--no-word-gaps", action="store_true", help="ctc_word_gaps=False: the head checks letters, the LLM spaces"
    )
    parser.add_argument(
        "--lexicon-penalty", type=float, action="append", help="ctc_lexicon_penalty; repeatable (default: the model's)"
    )
    parser.add_argument("--lexicon", type=Path, help="A word list to use instead of the model's lexicon.txt")
    parser.add_argument(
        "--head-temperature",
        type=float,
        action="append",
        help="Divide the CTC head's logits by T before decoding (T > 1 softer, < 1 sharper); repeatable (default 1)",
    )
    parser.add_argument(
        "--head-loss",
        action="store_true",
        help="Also report the head's CTC loss per character on the chosen dev clips at each --head-temperature",
    )
    add_sweep_options(parser, "ctc-weight")
    args = parser.parse_args()
    folder = shared_data(args.data)
    rows, _ = load_rows(folder / "dev")
    rows = rows[:: args.every]

    report = {"model": args.model, "clips": len(rows), "every": args.every, "runs": {}}
    if args.output.is_file():  # a sweep run in parts keeps the earlier parts' figures
        earlier = json.loads(args.output.read_text())
        if (earlier.get("model"), earlier.get("every")) == (args.model, args.every):
            report["runs"] = earlier["runs"]
    if args.head_loss:
        report["head_loss"] = head_loss(args.model, rows, args.head_temperature or [1])
        print(f"head CTC loss per character: {report['head_loss']}", flush=True)
    for beams in args.num_beams or [4]:
        for weight in args.weight or [0.3]:
            for penalty, temperature in itertools.product(args.lexicon_penalty or [None], args.head_temperature or [1]):
                options = {"ctc_word_gaps": False} if args.no_word_gaps else {}
                if penalty is not None:
                    options["ctc_lexicon_penalty"] = penalty
                recognizer = TinyAudioRecognizer(args.model, num_beams=beams, ctc_head_weight=weight, **options)
                if weight and not recognizer.decoding.ctc_head_weight:
                    sys.exit(f"{args.model} has no CTC head to weigh (train one with `tiny-audio ctc-head`)")
                if args.lexicon:
                    recognizer.model.lexicon = Lexicon.load(args.lexicon)
                if temperature != 1:
                    soften(recognizer.model.ctc_head, temperature)
                key = f"ctc-{weight:g}-beams{beams}" + ("-nogaps" if args.no_word_gaps else "")
                key += "" if penalty is None else f"-lex{penalty:g}"
                key += "" if temperature == 1 else f"-t{temperature:g}"
                result = run_evaluation(
                    recognizer, rows, args.output_dir / key, batch_size=args.batch_size, data_name=str(folder / "dev")
                )
                report["runs"][key] = wer_summary(result)
                print(f"{key}: {report['runs'][key]}", flush=True)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
