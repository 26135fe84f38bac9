#!/usr/bin/env bash
# The main job: install what is needed (first run only), then transcribe the bundled sample with the built-in
# default model (Whisper base encoder + SmolLM2-135M-Instruct, trained by Tiny Audio), fully offline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
tiny-audio transcribe tiny_audio/samples/jfk.flac "$@"
