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
    echo "[ricenet] installing packages into $venv (first run only: about 2 minutes on a 2-core machine when pip's cache holds the packages, up to about 15 when it downloads them all, torch included)" >&2
    log="$venv/install.log"
    : > "$log"
    pip_install() { "$venv/bin/python" -m pip install -q --no-compile "$@" >>"$log" 2>&1 \
        || { echo "[ricenet] 'pip install $*' failed; its output:" >&2; grep -v '^WARNING: Location' "$log" >&2; exit 1; }; }
    pip_install --upgrade pip
    # torch first, pinned, so that nothing later pulls a CUDA build.
    pip_install "$(grep '^torch==' "$root/requirements/dev.txt")"
    pip_install -r "$root/requirements/dev.txt"
    pip_install --no-deps -e "$root"
    # pip's own byte-compiling runs on one core; compileall -j 0 on all of them (50 s on 2 cores; the whole set-up took 2 min 31 s with pip compiling, 1 min 57 s this way).
    "$venv/bin/python" -m compileall -q -j 0 "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
        >>"$log" 2>&1 || true  # a few packages ship test files that are not Python 3; they are never imported
    "$venv/bin/python" -c "import torch, monai, SimpleITK, RICENetLib, RICENetTrainingLib" \
        || { echo "[ricenet] installation incomplete; see $log" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
