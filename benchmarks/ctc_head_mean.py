"""The mean of several CTC heads in joint decoding: does a second head, trained on other data, help the default?

    python benchmarks/ctc_head_mean.py --head runs/ctc-sp7 --every 2

Each --head is a model folder from `tiny-audio ctc-head default ...` (same encoder as the default). The script
reports each head's dev CTC loss per character and best-path WER alone, then the same for the mean of all heads
with the default's own (in probability: log of the mean), and decodes every K-th dev clip with the default's
shipped decoding (beam 4, CTC 0.2, no word gaps, lexicon 5), the default's head replaced by that mean. The eval is
resumable in --output-dir; writes JSON.

`--layer K` instead trains a new head (the `tiny-audio ctc-head` recipe, the train split only, --epochs) on the
hidden states after whisper-base's first K layers, and the same on its last layer, and reports both heads' dev
loss per epoch: which encoder layer a CTC head reads best.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from _shared import add_sweep_options, shared_data, wer_summary
from torch import nn

from tiny_audio import ctc_head as head_training
from tiny_audio.ctc import CHARS, CTCHead, spell
from tiny_audio.data import load_rows
from tiny_audio.evaluate import run_evaluation
from tiny_audio.features import FeatureCache
from tiny_audio.model import ASRModel
from tiny_audio.peers import TinyAudioRecognizer


class MeanHead(nn.Module):
    """CTC heads on the same frames, their probabilities averaged (the log of the mean); padding, output length and
    loss as CTCHead's."""

    output_length = staticmethod(CTCHead.output_length)
    padded_log_probs = CTCHead.padded_log_probs
    loss = CTCHead.loss

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        if any(getattr(h, "top", None) is not None for h in heads):
            raise SystemExit("the mean of heads takes heads on the encoder's output, not ones with encoder layers")
        self.heads = nn.ModuleList(heads)
        self.top = None  # reads the encoder's output, as each of its heads does

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        log_probs = torch.stack([h(frames, lengths) for h in self.heads])
        return torch.logsumexp(log_probs, 0) - math.log(len(self.heads))


def dev_scores(heads: dict[str, nn.Module], cache: FeatureCache, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Each head's dev CTC loss per character and best-path WER (the head alone)."""
    from jiwer import wer

    clips = [(row["audio"], spell(row["text"])) for row in rows if spell(row["text"])]
    cache.fill([audio for audio, _ in clips])
    refs = [" ".join("".join(CHARS[i - 1] for i in target).split()) for _, target in clips]
    scores = {}
    with torch.no_grad():
        for name, head in heads.items():
            loss, hyps = 0.0, []
            for audio, target in clips:
                frames = torch.from_numpy(cache.get(audio)[0].astype(np.float32))[None]
                loss += float(head.loss(frames, torch.tensor([frames.shape[1]]), [target]))
                hyps.append(head_training.greedy_text(head(frames)[0]))
            scores[name] = {
                "dev_loss": round(loss / sum(len(t) for _, t in clips), 4),
                "wer": round(wer(refs, hyps), 4),
            }
            print(f"{name}: {scores[name]}", flush=True)
    return scores


def layer_probe(folder: Path, layer: int, epochs: int) -> dict[str, list[dict]]:
    """Train the recipe's head on the train split from layer `layer`'s hidden states and from the last layer."""
    train, dev = load_rows(folder / "train")[0], load_rows(folder / "dev")[0]
    histories = {}
    for upto in (layer, None):
        model = ASRModel.from_pretrained("default")
        histories["last" if upto is None else f"after layer {upto}"] = head_training.train_ctc_head(
            model, train, dev, epochs=epochs, cache=FeatureCache(model, upto=upto)
        )
    return histories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", type=Path, action="append", default=[], help="A model folder with a CTC head")
    parser.add_argument("--every", type=int, default=2, help="Every K-th dev clip for the decoding (default 2)")
    parser.add_argument("--layer", type=int, help="Probe: train heads on this encoder layer and the last instead")
    parser.add_argument("--epochs", type=int, default=10, help="Epochs of the --layer probe")
    add_sweep_options(parser, "ctc-head-mean")
    args = parser.parse_args()
    folder = shared_data(args.data)
    if args.layer is not None:
        report = {"layer": args.layer, "epochs": args.epochs, "histories": layer_probe(folder, args.layer, args.epochs)}
    else:
        if not args.head:
            parser.error("give at least one --head (or --layer K)")
        recognizer = TinyAudioRecognizer(
            "default", num_beams=4, ctc_head_weight=0.2, ctc_word_gaps=False, ctc_lexicon_penalty=5.0
        )
        own = recognizer.model.ctc_head
        heads = {"default": own, **{str(p): ASRModel.from_pretrained(p).ctc_head.float().eval() for p in args.head}}
        mean = MeanHead(list(heads.values())).eval()
        dev_rows = load_rows(folder / "dev")[0]
        report = {
            "heads": [str(p) for p in args.head],
            "dev": dev_scores({**heads, "mean": mean}, FeatureCache(recognizer.model), dev_rows),
        }
        recognizer.model.ctc_head = mean
        recognizer.name += " (mean with " + ", ".join(report["heads"]) + ")"  # so no other mean's log resumes
        rows = dev_rows[:: args.every]
        result = run_evaluation(
            recognizer, rows, args.output_dir, batch_size=args.batch_size, data_name=str(folder / "dev")
        )
        report["decoding"] = {"clips": len(rows), "every": args.every, **wer_summary(result)}
        print(f"mean of heads, shipped decoding: {report['decoding']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
