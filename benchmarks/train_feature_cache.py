"""CPU training throughput with and without the frozen-encoder feature cache, side by side in one run.

    python benchmarks/train_feature_cache.py --clips 32 --steps 6 --batch-size 8
    python benchmarks/train_feature_cache.py --encoder hubert-xlarge --clips 16 --steps 2 --batch-size 8

Both modes run the same model (the `default` preset: Whisper base frozen + projector + SmolLM2 LoRA), the same
clips in the same batches, and the same optimizer steps (loading the clips, forward, backward, AdamW, as the
trainer's loop does); only the source of the encoder frames differs. The cache's one-off fill time is reported
separately. `--encoder hubert-xlarge` swaps in the seed design's frozen encoder (HuBERT-XLarge, 1B parameters,
random weights built from its bundled config: the speed is real, the frames are not), to show how the gain grows
with the encoder's share of a step. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tiny_audio.backbones import backbone_config
from tiny_audio.data import SpeechCollator, SpeechDataset, load_rows, shared_data_dir
from tiny_audio.features import FeatureCache
from tiny_audio.train import build_model, load_train_config


def run_steps(model, dataset, collator, batch_size: int, steps: int) -> float:
    """Seconds for `steps` optimizer steps after one warm-up step."""
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    start = 0.0
    for n in range(steps + 1):
        if n == 1:
            start = time.perf_counter()
        # Items load inside the timed loop: decoding audio (or reading cached frames) is part of every step.
        items = [dataset[(n * batch_size + i) % len(dataset)] for i in range(batch_size)]
        loss = model(**collator(items)).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-duration", type=float, default=20.0)
    parser.add_argument("--encoder", choices=["preset", "hubert-xlarge"], default="preset",
                        help="the preset's audio encoder, or the seed's HuBERT-XLarge with random weights")  # fmt: skip
    parser.add_argument("--output", type=Path, help="JSON (default: benchmarks/results/train_feature_cache*.json)")
    args = parser.parse_args()
    suffix = "" if args.encoder == "preset" else f"_{args.encoder}"
    args.output = args.output or Path(f"benchmarks/results/train_feature_cache{suffix}.json")
    if shared_data_dir() is None:
        raise SystemExit("shared speech data not found: expected ../shared/data or TINY_AUDIO_DATA")

    torch.manual_seed(0)
    config = load_train_config(args.preset)
    rows, _ = load_rows("train/manifest.jsonl", 0.5, args.max_duration)
    rows = rows[: args.clips]
    if args.encoder == "hubert-xlarge":
        audio = backbone_config("facebook/hubert-xlarge-ls960-ft").to_dict()
        config.model = {**config.model, "audio_model_id": None, "audio_config": audio}
    model = build_model(config)
    collator = SpeechCollator(model.processor)

    live = run_steps(model, SpeechDataset(rows), collator, args.batch_size, args.steps)
    cache = FeatureCache(model, root=Path(args.output).parent / "feature-cache")
    fill_start = time.perf_counter()
    cache.fill([r["audio"] for r in rows], batch_size=args.batch_size, progress=False)
    fill = time.perf_counter() - fill_start
    cached = run_steps(model, SpeechDataset(rows, feature_cache=cache), collator, args.batch_size, args.steps)

    samples = args.steps * args.batch_size
    audio_s = sum(r["duration"] for r in rows) / len(rows) * samples
    result = {
        "command": "python benchmarks/train_feature_cache.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "preset": args.preset,
        "encoder": args.encoder,
        "clips": len(rows),
        "mean_clip_s": round(audio_s / samples, 2),
        "live_samples_per_s": round(samples / live, 3),
        "cached_samples_per_s": round(samples / cached, 3),
        "speedup": round(live / cached, 2),
        "cache_fill_s": round(fill, 2),
    }
    print(f"{'mode':<22}{'samples/s':>12}{'s/step':>10}")
    print(f"{'encoder every step':<22}{result['live_samples_per_s']:>12.3f}{live / args.steps:>10.2f}")
    print(f"{'feature cache':<22}{result['cached_samples_per_s']:>12.3f}{cached / args.steps:>10.2f}")
    print(f"encoder: {args.encoder}")
    print(f"speedup x{result['speedup']} (one-off cache fill {fill:.1f} s for {len(rows)} clips; {result['machine']})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
