#!/usr/bin/env bash
# The main job on a built-in default: `ricenet demo` (see README). Extra
# arguments go to `ricenet demo`, e.g. ./demo.sh --out /tmp/ricenet-demo
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-venv.sh
exec ricenet demo "$@"
