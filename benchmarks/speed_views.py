"""Rescoring the beam's n-best list with the model's own scores of the clip heard at speeds 0.9 and 1.1.

    python benchmarks/lm_rescore.py nbest --output runs/nbest-b16-sums.jsonl      # the lists (25 min)
    python benchmarks/lm_rescore.py rescore runs/nbest-b16-sums.jsonl              # the plain LLM's scores
    python benchmarks/speed_views.py runs/nbest-b16-sums.jsonl --output benchmarks/results/speed_views.json

Test-time augmentation for the acoustic side: the default model was trained on its real clips at speeds 0.9, 1.0
and 1.1, so each speed is a view it knows, and its mistakes may differ from one view to the next. For every
hypothesis of every clip this scores, at each speed, the LLM's log-probability of the text given the audio
(teacher-forced, the prompt computed once per clip) and the CTC head's log-probability of its letters (word gaps
folded into the blank, as the default's decoding reads the head). The scores are kept beside the n-best file
(`.views.jsonl`, resumable; about 16 min for dev here). The report ranks each clip's hypotheses by the shipped
rescoring (`sum + 0.3 * lm + 0.3 * ctc`, i.e. LM 0.3 and CTC 0.5 against the search's 0.2) plus weights on the two
other speeds' LLM and CTC scores and on the LLM's own score at 1.0, chosen on the even clips, checked on the odd.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from _shared import shared_data
from lm_rescore import halves, hypothesis_errors, pick_wer
from transformers import DynamicCache

from tiny_audio.audio import load_audio
from tiny_audio.augment import change_speed
from tiny_audio.ctc import SPACE, spell, spoken_digits, without_word_gaps
from tiny_audio.data import load_rows
from tiny_audio.encoder import encode_audio
from tiny_audio.model import ASRModel

SPEEDS = (1.0, 0.9, 1.1)


def letters(text: str) -> list[int]:
    """The head's letters of a text without word gaps, digits by their names (as joint decoding spells them)."""
    return [c for c in spell(spoken_digits(text)) if c != SPACE]


@torch.inference_mode()
def view_scores(model: ASRModel, audio: np.ndarray, texts: list[str]) -> tuple[list[float], list[float]]:
    """Each text's LLM log-probability given the audio (with the end token) and its CTC log-probability."""
    processor, lm = model.processor, model.language_model
    feats = processor.audio_features([audio])
    frames, lengths = encode_audio(model.audio_tower, feats["input_features"], feats["audio_attention_mask"].sum(-1))
    log_probs = without_word_gaps(model.ctc_head.padded_log_probs(frames, lengths)[0].double())
    steps = int(model.ctc_head.output_length(lengths)[0])
    ctc = []
    for text in texts:
        target = letters(text)
        if not target:
            ctc.append(float(log_probs[:steps, 0].sum()))
            continue
        loss = torch.nn.functional.ctc_loss(
            log_probs[:steps, None], torch.tensor([target]), torch.tensor([steps]), torch.tensor([len(target)]),
            reduction="sum",
        )  # fmt: skip
        ctc.append(-float(loss))
    prompt = processor.text_inputs([len(audio)])["input_ids"]
    embeds, _, _ = model._embed(prompt, audio_frames=frames, audio_frame_lengths=lengths)
    cache = DynamicCache(config=lm.config)
    first = lm(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1).logits[0, -1].float()
    first = first.log_softmax(-1)
    targets = [processor.tokenizer(t, add_special_tokens=False)["input_ids"] + [processor.eos_token_id] for t in texts]
    count, width, longest = len(texts), prompt.shape[1], max(len(t) for t in targets)
    ids = torch.zeros((count, longest), dtype=torch.long)
    mask = torch.zeros((count, longest), dtype=torch.long)
    for i, t in enumerate(targets):
        ids[i, : len(t)], mask[i, : len(t)] = torch.tensor(t), 1
    cache.batch_repeat_interleave(count)
    out = lm(
        input_ids=ids,
        attention_mask=torch.cat([torch.ones((count, width), dtype=torch.long), mask], 1),
        position_ids=(width + torch.arange(longest))[None].expand(count, longest),
        cache=cache,
        use_cache=True,
    )
    later = out.logits.float().log_softmax(-1)
    llm = [
        float(first[t[0]]) + float(later[i, torch.arange(len(t) - 1), torch.tensor(t[1:])].sum())
        for i, t in enumerate(targets)
    ]
    return llm, ctc


def score_views(nbest: Path, views: Path, model_name: str, data: Path | None) -> None:
    """Write each clip's view scores (one JSON line per clip), skipping clips already done."""
    clips = [json.loads(line) for line in nbest.read_text().splitlines() if line.strip()]
    done = {json.loads(line)["id"] for line in views.read_text().splitlines()} if views.is_file() else set()
    todo = [c for c in clips if c["id"] not in done]
    if not todo:
        return
    rows = {r["id"]: r for r in load_rows(shared_data(data) / "dev")[0]}
    model = ASRModel.from_pretrained(model_name).for_inference("float32")
    if model.ctc_head is None:
        raise SystemExit(f"{model_name} has no CTC head: the views are scored by its LLM and its head")
    if model.config.generation_defaults.get("ctc_word_gaps", True):
        raise SystemExit(f"{model_name} decodes with word gaps; the views read the head without them, as the default")
    started = time.time()
    with views.open("a") as out:
        for k, clip in enumerate(todo):
            audio = load_audio(rows[clip["id"]]["audio"], target_rate=model.config.sample_rate)
            texts = [h["text"] for h in clip["hyps"]]
            line = {"id": clip["id"]}
            for speed in SPEEDS:
                view = audio if speed == 1.0 else change_speed(audio, speed)
                line[f"llm{speed}"], line[f"ctc{speed}"] = view_scores(model, view, texts)
            out.write(json.dumps(line) + "\n")
            out.flush()
            print(f"{k + 1}/{len(todo)}, {time.time() - started:.0f} s", flush=True)


def report(nbest: Path, views: Path, lm_name: str) -> dict:
    lm_file = nbest.with_suffix(f".{Path(lm_name).name}.lm.json")
    if not lm_file.is_file():
        raise SystemExit(f"{lm_file} not found: run `python benchmarks/lm_rescore.py rescore {nbest}` first")
    lm = json.loads(lm_file.read_text())
    scored = {json.loads(line)["id"]: json.loads(line) for line in views.read_text().splitlines()}
    clips = [json.loads(line) for line in nbest.read_text().splitlines() if line.strip()]
    names = ["sum", "lm", "ctc", *(f"{kind}{s}" for kind in ("llm", "ctc") for s in SPEEDS)]
    columns = {name: [] for name in names}
    for clip in clips:
        for i, h in enumerate(clip["hyps"]):
            columns["sum"].append(h["sum"])
            columns["lm"].append(lm[h["text"]])
            columns["ctc"].append(h["ctc"])
            for kind, s in itertools.product(("llm", "ctc"), SPEEDS):
                columns[f"{kind}{s}"].append(scored[clip["id"]][f"{kind}{s}"][i])
    # A text the head cannot align at all scores -inf; a floor keeps the sums finite without changing the ranking.
    table = {k: np.maximum(np.array(v, dtype=np.float64), -1e4).reshape(len(clips), -1) for k, v in columns.items()}
    table["errors"], words = hypothesis_errors(clips)
    parts = halves(len(clips))

    def wer(picks: np.ndarray, half: str) -> float:
        return pick_wer(table["errors"], words, picks, parts[half])

    def picks(llm: float, ctc: float, own: float) -> np.ndarray:
        total = table["sum"] + 0.3 * table["lm"] + 0.3 * table["ctc"] + own * table["llm1.0"]
        total = total + llm * (table["llm0.9"] + table["llm1.1"]) + ctc * (table["ctc0.9"] + table["ctc1.1"])
        return total.argmax(-1)

    grid = list(itertools.product([0, 0.1, 0.2, 0.3, 0.5, 1.0], [0, 0.1, 0.2, 0.3, 0.5], [0, 0.3]))
    rows = [
        {"llm_views": a, "ctc_views": c, "llm_own": o, **{h: wer(picks(a, c, o), h) for h in parts}} for a, c, o in grid
    ]
    return {
        "nbest": str(nbest),
        "clips": len(clips),
        "shipped_rescoring": {h: wer(picks(0, 0, 0), h) for h in parts},
        "oracle": wer(table["errors"].argmin(-1), "all"),
        "best_on_even": sorted(rows, key=lambda r: (r["even"], r["odd"]))[:10],
        "sweep": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nbest", type=Path, help="An n-best file from `lm_rescore.py nbest` (with sums and CTC)")
    parser.add_argument("--model", default="default", help="The model that wrote the lists (default: the default)")
    parser.add_argument("--lm", default="smollm2-135m-instruct", help="The LM of `lm_rescore.py rescore`")
    parser.add_argument("--data", type=Path, help="The shared data folder (default ../shared/data)")
    parser.add_argument("--output", type=Path, help="Also write the report here (JSON)")
    args = parser.parse_args()
    views = args.nbest.with_suffix(".views.jsonl")
    score_views(args.nbest, views, args.model, args.data)
    result = report(args.nbest, views, args.lm)
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
