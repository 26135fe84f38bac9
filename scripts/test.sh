#!/usr/bin/env bash
# Install everything needed (first run only), then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ruff check tiny_audio tests benchmarks scripts
ruff format --check tiny_audio tests benchmarks scripts
python -m pytest "$@"
