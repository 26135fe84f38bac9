"""CPU training step of the default model: the plain path against Tiny Audio's fast paths, side by side in one run.

    python benchmarks/train_step.py --clips 32 --steps 4 --batch-size 8

Every mode runs the same batches of real training clips (encoder frames from the feature cache, as the trainer
does for a frozen encoder) through forward, backward and an AdamW step of the trained parts (projector + LoRA):

- plain: transformers' causal-LM loss, the LM head on every position, float32 (the usual recipe);
- transcript head: `ASRModel.forward`, the LM head only at the positions that predict a transcript token;
- transcript head + bf16: the same under CPU bfloat16 autocast (`training.bf16=true`), float32 master weights.

Prints samples per second, the ratio to the plain path and the mean loss of each mode (the same batches give the
same loss up to bf16 rounding), and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from tiny_audio.data import SpeechCollator, SpeechDataset, load_rows, shared_data_dir
from tiny_audio.features import FeatureCache
from tiny_audio.train import build_model, load_train_config


def plain_loss(model, batch: dict) -> torch.Tensor:
    """transformers' own loss: logits for every position, then cross-entropy on the transcript tokens."""
    embeds = model._embed(
        batch["input_ids"], audio_frames=batch["audio_frames"], audio_frame_lengths=batch["audio_frame_lengths"]
    )
    return model.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss


def run(model, batches: list[dict], steps: int, loss_fn, bf16: bool) -> tuple[float, float]:
    """Seconds for `steps` optimizer steps after one warm-up step, and their mean loss."""
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    start, losses = 0.0, []
    for n in range(steps + 1):
        if n == 1:
            start = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = loss_fn(model, batches[n % len(batches)])
        loss.backward()
        optim.step()
        optim.zero_grad()
        if n:
            losses.append(float(loss.detach()))
    return time.perf_counter() - start, sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-duration", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args()
    if shared_data_dir() is None:
        raise SystemExit("shared speech data not found: expected ../shared/data or TINY_AUDIO_DATA")

    torch.manual_seed(0)
    model = build_model(load_train_config(args.preset))
    rows, _ = load_rows("train/manifest.jsonl", 0.5, args.max_duration)
    rows = rows[: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(model, root=Path(tmp))
        cache.fill([r["audio"] for r in rows], batch_size=args.batch_size, progress=False)
        dataset, collator = SpeechDataset(rows, feature_cache=cache), SpeechCollator(model.processor)
        batches = [
            collator([dataset[i] for i in range(start, min(start + args.batch_size, len(rows)))])
            for start in range(0, len(rows), args.batch_size)
        ]
    # Each mode starts from the same weights, so the losses are comparable.
    initial = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k or k.startswith("projector.")}
    modes = [
        ("plain (head on every position, fp32)", plain_loss, False),
        ("transcript head, fp32", lambda m, b: m(**b).loss, False),
        ("transcript head, bf16 autocast", lambda m, b: m(**b).loss, True),
    ]
    results = []
    for name, loss_fn, bf16 in modes:
        model.load_state_dict(initial, strict=False)
        seconds, loss = run(model, batches, args.steps, loss_fn, bf16)
        results.append({"mode": name, "samples_per_s": round(args.steps * args.batch_size / seconds, 3),
                        "s_per_step": round(seconds / args.steps, 3), "mean_loss": round(loss, 4)})  # fmt: skip
    for r in results:
        r["speedup"] = round(r["samples_per_s"] / results[0]["samples_per_s"], 2)

    mean_clip = sum(r["duration"] for r in rows) / len(rows)
    print(f"{'mode':<40}{'samples/s':>11}{'s/step':>9}{'x plain':>9}{'loss':>9}")
    for r in results:
        print(
            f"{r['mode']:<40}{r['samples_per_s']:>11.3f}{r['s_per_step']:>9.2f}{r['speedup']:>9.2f}{r['mean_loss']:>9.4f}"
        )
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"{len(rows)} train clips of {mean_clip:.1f} s mean, batch {args.batch_size}; {machine}")
    output = {
        "command": "python benchmarks/train_step.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "machine": machine,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mean_clip_s": round(mean_clip, 2),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")


if __name__ == "__main__":
    main()
