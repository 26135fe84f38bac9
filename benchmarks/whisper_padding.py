"""Does whisper-base hear better with the 30 s of padding it was trained on? A CTC-head probe.

    python benchmarks/whisper_padding.py --output benchmarks/results/whisper_padding.json

Tiny Audio runs the Whisper encoder on the real length of each clip (its position table sliced, see
tiny_audio/encoder.py), about 4x cheaper on short clips than padding every clip to 30 s as Whisper was trained.
The frames differ, and the encoder is frozen, so if the sliced frames lost what the words need, no projector could
win it back. This trains the `tiny-audio ctc-head` recipe (seed 0, train split only, --epochs) twice on the default
model's encoder, once on frames of the real length and once on frames of the clip padded to 30 s (Whisper's own
feature extractor, then the first frames, one per 20 ms of the clip), and reports each head's dev CTC loss per
character and greedy WER per epoch. The padded frames are cached apart from the real-length ones (about 0.55 s a
clip to compute here, 20 min for train and dev).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _shared import shared_data

from tiny_audio import ctc_head as head_training
from tiny_audio.data import load_rows, read_clip
from tiny_audio.encoder import _whisper_forward, encoder_output_length
from tiny_audio.features import FeatureCache
from tiny_audio.model import ASRModel


class PaddedFeatureCache(FeatureCache):
    """Encoder frames of each clip padded to Whisper's 30 s window, cut back to the clip's own frames."""

    def __init__(self, model: ASRModel):
        super().__init__(model)
        self.folder = self.folder.with_name(self.folder.name + "-pad30")

    def fill(self, audio_paths: list[str], batch_size: int = 8, progress: bool = True) -> tuple[int, int]:
        missing = [p for p in dict.fromkeys(audio_paths) if not self.path_for(p).is_file()]
        tower, processor = self.model.audio_tower.eval(), self.model.processor
        rate, started = self.model.config.sample_rate, time.time()
        with torch.no_grad():
            for start in range(0, len(missing), batch_size):
                paths = missing[start : start + batch_size]
                arrays = [read_clip(p, rate) for p in paths]
                # Whisper's feature extractor pads to 30 s by default; the real length is what the shipped
                # processor gives the same clip.
                window = processor.feature_extractor(arrays, sampling_rate=rate, return_tensors="pt")["input_features"]
                frames = _whisper_forward(tower, window.float(), torch.full((len(paths),), window.shape[-1]))
                real = torch.tensor([processor._features(a).shape[-1] for a in arrays])
                counts = encoder_output_length(tower.config, real)
                for path, array, f, n in zip(paths, arrays, frames, counts, strict=True):
                    self._write(path, f[: int(n)].to(torch.float16).numpy(), len(array))
                if progress and start % 200 == 0:
                    print(f"padded frames {start + len(paths)}/{len(missing)}, {time.time() - started:.0f} s")
        return len(missing), 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="The shared data folder (default ../shared/data)")
    parser.add_argument("--model", default="default", help="A model with a Whisper encoder (default: the default)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/whisper_padding.json"))
    args = parser.parse_args()
    folder = shared_data(args.data, "train") and shared_data(args.data)
    train, dev = load_rows(folder / "train")[0], load_rows(folder / "dev")[0]
    histories = {}
    for name in ("real length", "padded to 30 s"):
        model = ASRModel.from_pretrained(args.model)
        cache = FeatureCache(model) if name == "real length" else PaddedFeatureCache(model)
        histories[name] = head_training.train_ctc_head(model, train, dev, epochs=args.epochs, cache=cache)
    report = {"epochs": args.epochs, "train_clips": len(train), "dev_clips": len(dev), "histories": histories}
    for name, history in histories.items():
        print(f"{name}: dev loss {history[-1]['dev_loss']:.4f}, greedy WER {100 * history[-1]['dev_greedy_wer']:.2f}%")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
