"""GPU speed with random weights built from the backbones' configs (no download): inference and seed-size training.

    python benchmarks/gpu.py infer --batch-size 64            # default design: Whisper base + SmolLM2-135M
    python benchmarks/gpu.py train-seed --batch-size 8        # HuBERT-XLarge + Qwen3-8B with the seed's LoRA
    python benchmarks/gpu.py infer train-seed --tiny          # a CPU smoke run with tiny configs

`infer`: batched generation in bf16 with SDPA attention on clips of `--clip-s` seconds, `--tokens-per-s` new
tokens a second of audio forced (random weights never say end-of-text; 3.5 is about read English in SmolLM2's
tokens), KV cache on. RTFx = audio seconds / wall seconds, after a warm-up batch.
`train-seed`: forward + backward + AdamW steps of the seed design (frozen HuBERT-XLarge with LoRA r=16 on q,k;
projector 6400 -> 8192 -> 4096; frozen Qwen3-8B with LoRA r=8 on q,v; bf16 weights; SDPA; gradient
checkpointing as in the seed preset) on 15 s clips with 40-token transcripts; samples per second against the
seed's stated ~12 samples/s on one A40. Random weights make the speed real and the loss meaningless.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tiny_audio.backbones import backbone_config
from tiny_audio.config import ASRConfig
from tiny_audio.model import ASRModel
from tiny_audio.processor import ASRProcessor
from tiny_audio.testing import tiny_decoder_config, tiny_encoder_config, tiny_tokenizer

RATE = 16000


def build(design: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> ASRModel:
    if tiny:
        audio = tiny_encoder_config("whisper" if design == "default" else "hubert").to_dict()
        text = tiny_decoder_config("qwen3", 401).to_dict()
        extra = {"projector_hidden_dim": 64}
    elif design == "default":
        audio, text = backbone_config("openai/whisper-base"), backbone_config("HuggingFaceTB/SmolLM2-135M-Instruct")
        extra = {"projector_hidden_dim": 2048, "encoder_lora_rank": 0, "decoder_lora_rank": 8}
    else:
        audio, text = backbone_config("facebook/hubert-xlarge-ls960-ft"), backbone_config("Qwen/Qwen3-8B")
        extra = {"projector_hidden_dim": 8192, "encoder_lora_rank": 16, "decoder_lora_rank": 8,
                 "encoder_lora_target_modules": ["q_proj", "k_proj"]}  # fmt: skip
    audio = audio if isinstance(audio, dict) else audio.to_dict()
    text = text if isinstance(text, dict) else text.to_dict()
    text["_attn_implementation"] = "sdpa"
    audio["_attn_implementation"] = "sdpa"
    config = ASRConfig(audio_config=audio, text_config=text, projector_stack_size=5, **extra)
    with torch.device(device):
        model = ASRModel(config, load_backbones=False, dtype=dtype)
    model = model.to(device=device, dtype=dtype)
    # A stand-in tokenizer: the prompt's token ids only need to exist in the LLM's vocabulary.
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor() if config.audio_config.model_type == "whisper" else Wav2Vec2FeatureExtractor()
    model.processor = ASRProcessor(extractor, tiny_tokenizer(), model.config)
    return model


def clips(n: int, seconds: float, seed: int = 0) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * RATE))).astype("float32") for _ in range(n)]


def seconds_per_call(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Mean wall seconds of `fn` over `repeats` calls after one warm-up call, waiting for the GPU each time."""

    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def infer(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    model = build("default", args.tiny, device, dtype).eval()
    audio = clips(args.batch_size, args.clip_s)
    tokens = max(int(args.tokens_per_s * args.clip_s), 1)
    batch = model.processor(audio).to(device)
    batch["input_features"] = batch["input_features"].to(dtype)
    options = {"min_new_tokens": tokens, "max_new_tokens": tokens, "max_new_tokens_per_second": None}

    def run() -> None:
        with torch.inference_mode():
            model.generate(**batch, **options)

    wall = seconds_per_call(run, device, args.repeats)
    return {"what": "default-design batched inference", "batch": args.batch_size, "clip_s": args.clip_s,
            "new_tokens": tokens, "seconds_per_batch": round(wall, 3),
            "rtfx": round(args.batch_size * args.clip_s / wall, 1)}  # fmt: skip


def train_seed(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    model = build("seed", args.tiny, device, dtype)
    model.train()
    if not args.tiny:
        model.language_model.gradient_checkpointing_enable()
    audio = clips(args.batch_size, 15.0)
    texts = [" ".join(["word"] * 40)] * args.batch_size
    batch = model.processor(audio, text=texts, padding_side="right").to(device)
    batch["input_features"] = batch["input_features"].to(dtype)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    wall = seconds_per_call(step, device, args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"what": "seed-size training step", "batch": args.batch_size, "clip_s": 15.0,
            "seconds_per_step": round(wall, 3), "samples_per_s": round(args.batch_size / wall, 2),
            "vs_seed_12_per_s": round(args.batch_size / wall / 12, 2),
            "peak_gpu_gib": round(peak, 1) if peak else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="+", choices=["infer", "train-seed"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--tokens-per-s", type=float, default=3.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny random configs: a smoke run that fits a CPU")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        sys.exit("no GPU here: run with --tiny for a CPU smoke run (the figures then mean nothing)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    rows = []
    for what in args.what:
        local = argparse.Namespace(**vars(args))
        if local.batch_size is None:
            local.batch_size = {"infer": 64, "train-seed": 8}[what] if not args.tiny else 2
        rows.append(infer(local, device, dtype) if what == "infer" else train_seed(local, device, dtype))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n{name}, torch {torch.__version__}, {dtype}{' (tiny configs: smoke run only)' if args.tiny else ''}")
    for r in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"command": " ".join(sys.argv), "device": name, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
