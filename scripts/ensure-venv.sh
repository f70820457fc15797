#!/usr/bin/env bash
# Create (once) and update (when the install files change) the project's
# virtual environment in .venv, then activate it. Sourced by ./demo.sh and
# ./test.sh so that a fresh clone needs nothing installed by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "[ricenet] creating virtual environment in $venv" >&2
    "$python" -m venv "$venv"
fi
stamp="$venv/.ricenet-installed"
want="$(cat "$root/requirements/dev.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[ricenet] installing packages into $venv (first run only; about a minute)" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # torch first, pinned, so that nothing later pulls a CUDA build.
    "$venv/bin/python" -m pip install -q "$(grep '^torch==' "$root/requirements/dev.txt")" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -m pip install -q -r "$root/requirements/dev.txt" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -m pip install -q --no-deps -e "$root" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -c "import torch, monai, SimpleITK, RICENetLib, RICENetTrainingLib" \
        || { echo "[ricenet] installation failed; see the messages above" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
