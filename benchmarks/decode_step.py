"""One generation step's matmuls on the CPU, by weight format: why the default model's batched decoding costs what
it costs, and which precision would help.

    python benchmarks/decode_step.py --batch-size 8

Each new token runs every Linear layer of the language model on one row per clip, so with a batch of 8 a step
reads all the weights once and does little arithmetic with them: its time is the weights' bytes over the
memory bandwidth. This builds the layer shapes of SmolLM2-135M (30 layers of q/k/v/o and gate/up/down, plus the
tied 49k x 576 LM head; random weights, so nothing is downloaded) and times one step's matmuls at each format:
float32 (as trained), bfloat16, int8 dynamic quantization (`torch.ao` quantized Linear: weights and activations
int8), and int8 weight-only (`torch._weight_int8pack_mm`: int8 weights with per-channel scales, bfloat16
activations). Prints ms per step, the weights' MB and the implied GB/s; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

# SmolLM2-135M: hidden 576, 9 query heads and 3 key/value heads of 64, MLP 1536, 30 layers, vocabulary 49152.
HIDDEN, KV, MLP, LAYERS, VOCAB = 576, 192, 1536, 30, 49152
ATTENTION = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN)]  # q, k, v, o
LAYER_SHAPES = ATTENTION + [(MLP, HIDDEN), (MLP, HIDDEN), (HIDDEN, MLP)]  # + gate, up, down


def shapes(layers: int) -> list[tuple[int, int]]:
    """(out, in) of every Linear a decoding step runs, the LM head last."""
    return LAYER_SHAPES * layers + [(VOCAB, HIDDEN)]


def step_function(fmt: str, weights: list[torch.Tensor], batch: int) -> tuple[Callable[[], None], int]:
    """A callable running one step's matmuls in `fmt`, and the bytes of weights it reads."""
    if fmt in ("float32", "bfloat16"):
        dtype = getattr(torch, fmt)
        mats = [w.to(dtype) for w in weights]
        inputs = {n: torch.randn(batch, n, dtype=dtype) for n in {w.shape[1] for w in weights}}
        return (lambda: [inputs[w.shape[1]] @ w.t() for w in mats]), sum(w.numel() * w.element_size() for w in mats)
    if fmt == "int8-dynamic":
        from torch.ao.quantization import quantize_dynamic

        linears = []
        for w in weights:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
            layer.weight.data = w
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                linears.append(quantize_dynamic(nn.Sequential(layer), {nn.Linear}, dtype=torch.qint8))
        inputs = {n: torch.randn(batch, n) for n in {w.shape[1] for w in weights}}
        return (lambda: [m(inputs[w.shape[1]]) for m, w in zip(linears, weights, strict=True)]), sum(
            w.numel() for w in weights
        )
    if fmt == "int8-weight-only":
        packed = []
        for w in weights:
            scales = w.abs().amax(1).clamp(min=1e-8) / 127
            packed.append((torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales.bfloat16()))
        inputs = {n: torch.randn(batch, n, dtype=torch.bfloat16) for n in {w.shape[1] for w in weights}}
        return (lambda: [torch._weight_int8pack_mm(inputs[q.shape[1]], q, s) for q, s in packed]), sum(
            q.numel() + s.numel() * 2 for q, s in packed
        )
    raise ValueError(fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--formats", nargs="+", default=["float32", "bfloat16", "int8-dynamic", "int8-weight-only"])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/decode_step.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    weights = [torch.randn(out, inp) / inp**0.5 for out, inp in shapes(args.layers)]
    rows = []
    for fmt in args.formats:
        run, size = step_function(fmt, weights, args.batch_size)
        run()  # warm-up: packing, first-touch of the weights
        start = time.perf_counter()
        for _ in range(args.steps):
            run()
        seconds = (time.perf_counter() - start) / args.steps
        rows.append({"format": fmt, "ms_per_step": round(seconds * 1e3, 2), "weights_mb": round(size / 1e6, 1),
                     "gb_per_s": round(size / seconds / 1e9, 2)})  # fmt: skip
        print(f"{fmt}: {rows[-1]['ms_per_step']} ms per step")
    threads = torch.get_num_threads()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads"
    print(f"\nOne decoding step's matmuls, SmolLM2-135M shapes, batch {args.batch_size}; {machine}")
    print(f"{'format':<20}{'ms/step':>10}{'weights MB':>12}{'GB/s':>8}")
    for r in rows:
        print(f"{r['format']:<20}{r['ms_per_step']:>10}{r['weights_mb']:>12}{r['gb_per_s']:>8}")
    base = rows[0]["ms_per_step"]
    for r in rows[1:]:
        print(f"{r['format']}: x{base / r['ms_per_step']:.2f} the speed of {rows[0]['format']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/decode_step.py --batch-size " + str(args.batch_size)
    args.output.write_text(json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
