#!/usr/bin/env bash
# Render a RICE-NET report.html to a PNG with headless Chromium (for the README's picture, or to look at a
# report on a machine without a desktop).
#
#   scripts/render_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# OUT.png defaults to docs/report.png, the size to 1200x1600 CSS pixels. Needs Chromium
# (Debian/Ubuntu: apt-get install chromium; elsewhere set CHROMIUM=/path/to/chrome). The report is one
# self-contained file, so nothing is fetched: networking, sync and updates are switched off, and a
# throw-away profile keeps the user's own browser profile out of it.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
report=$1
out=${2:-docs/report.png}
size=${3:-1200x1600}
if [[ ! -f "$report" ]]; then
    echo "render_report: $report is not a file" >&2
    exit 2
fi
if [[ ! "$size" =~ ^[0-9]+x[0-9]+$ ]]; then
    echo "render_report: size $size is not WIDTHxHEIGHT (e.g. 1200x1600)" >&2
    exit 2
fi
browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then browser=$(command -v "$name"); break; fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "render_report: no Chromium found; install it (apt-get install chromium) or set CHROMIUM" >&2
    exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
tmp="$(dirname "$out")/.$(basename "$out").$$.png"
url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$tmp" --window-size="${size/x/,}" "$url" >/dev/null 2>"$profile/log" || {
    cat "$profile/log" >&2
    rm -f "$tmp"
    echo "render_report: Chromium failed on $report" >&2
    exit 1
}
if [[ ! -s "$tmp" ]]; then
    cat "$profile/log" >&2
    echo "render_report: Chromium wrote no picture of $report" >&2
    exit 1
fi
mv -f "$tmp" "$out"
echo "$out"
