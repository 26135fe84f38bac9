"""Which of the default model's layers can take int8 dynamic quantization: WER and speed on a few dev clips.

    python benchmarks/int8_layers.py --clips 24

`--precision int8` quantizes every Linear layer and doubles the default model's WER. This keeps chosen layers of
the language model in float32 (the audio tower is int8 in every quantized row) and transcribes the same dev clips
in batches of 8, to see whether a partial int8 keeps the accuracy and some of the speed. Prints a table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from inference_cpu import clips  # beside this script
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

from tiny_audio import ASRModel
from tiny_audio.evaluate import word_error_rate
from tiny_audio.transcribe import transcribe

# Language-model layers kept in float32 per row; None: nothing quantized.
VARIANTS = {
    "float32": None,
    "int8, LM head float32": ["lm_head"],
    "int8, + MLP down float32": ["down_proj", "lm_head"],
    "int8 attention only": ["down_proj", "gate_proj", "up_proj", "lm_head"],
}


def quantized(keep_float: list[str] | None) -> ASRModel:
    model = ASRModel.from_pretrained("default").for_inference("float32")
    if keep_float is None:
        return model
    names = {
        name
        for name, module in model.language_model.named_modules()
        if isinstance(module, nn.Linear) and not any(part in name for part in keep_float)
    }
    with warnings.catch_warnings():  # torch marks quantized tensor creation as deprecated; it works
        warnings.simplefilter("ignore")
        spec = dict.fromkeys(names, default_dynamic_qconfig)
        model.language_model = quantize_dynamic(model.language_model, spec, dtype=torch.qint8)
        model.audio_tower = quantize_dynamic(model.audio_tower, {nn.Linear}, dtype=torch.qint8)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    audio, references = clips(args.data, args.clips)  # the same spread of dev clips as inference_cpu.py
    seconds = sum(len(a) for a in audio) / 16000
    print(f"{'variant':<28}{'WER %':>8}{'RTFx':>8}")
    for name, keep_float in VARIANTS.items():
        model = quantized(keep_float)
        transcribe(model, audio[:2], batch_size=2)  # warm-up
        start = time.perf_counter()
        texts = [t.text for t in transcribe(model, audio, batch_size=8)]
        wall = time.perf_counter() - start
        wer = 100 * word_error_rate(references, texts)["wer"]
        print(f"{name:<28}{wer:>8.2f}{seconds / wall:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
