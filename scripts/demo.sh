#!/usr/bin/env bash
# The main job, as far as it goes today: install, show the reference designs, then run the whole path
# (build a model -> save -> load through transformers.pipeline with trust_remote_code -> transcribe the bundled
# sample). The built-in default model is not trained yet (issue 6), so this uses tiny random backbones and
# prints noise where the transcript will be.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
tiny-audio info --preset seed
echo
tiny-audio info --preset default
echo
python - <<'PY'
import tempfile, warnings
import torch
warnings.filterwarnings("ignore")
from transformers import pipeline
from transformers.utils import logging
logging.set_verbosity_error(); logging.disable_progress_bar()
from tiny_audio import ASRConfig, ASRModel
from tiny_audio.audio import BUNDLED_SAMPLE as SAMPLE
from tiny_audio.testing import make_tiny_backbones

with tempfile.TemporaryDirectory() as tmp:
    audio_dir, text_dir = make_tiny_backbones(tmp, encoder="whisper", decoder="qwen3")
    ASRModel(ASRConfig(audio_model_id=audio_dir, text_model_id=text_dir)).save_pretrained(f"{tmp}/model")
    asr = pipeline("automatic-speech-recognition", model=f"{tmp}/model", trust_remote_code=True, device="cpu")
    torch.manual_seed(0)  # sampled, so the untrained model's noise is visible (greedy gives blanks)
    result = asr(str(SAMPLE), max_new_tokens=12, do_sample=True)
    print(f"{SAMPLE.name}: {result['text']!r}")
    print("(untrained tiny random model: the text is noise until the default model ships)")
PY
