#!/usr/bin/env bash
# The test suite (pytest). Extra arguments go to pytest, e.g. ./test.sh -k io
# The tests run in 2 processes (pytest-xdist): most of them use one thread, so on a 2-core machine
# the suite takes about 7 minutes instead of 10. RICENET_TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-venv.sh
exec python -m pytest -n "${RICENET_TEST_WORKERS:-2}" "$@"
