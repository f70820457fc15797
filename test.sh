#!/usr/bin/env bash
# The test suite (pytest). Extra arguments go to pytest, e.g. ./test.sh -k io
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-venv.sh
exec python -m pytest "$@"
