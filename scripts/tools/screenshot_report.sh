#!/usr/bin/env bash
# The top of a report page as a PNG, drawn by headless Chromium (Debian: apt-get install
# chromium):   scripts/tools/screenshot_report.sh results/quickstart/report/report.html OUT.png [HEIGHT]
set -euo pipefail
page=${1:?usage: $0 REPORT_HTML OUT_PNG [HEIGHT]}
out=${2:?usage: $0 REPORT_HTML OUT_PNG [HEIGHT]}
height=${3:-1400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "error: no Chromium found; install it (Debian: apt-get install chromium)" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --no-first-run --disable-sync \
    --disable-background-networking --disable-component-update --hide-scrollbars \
    --user-data-dir="$profile" --window-size=1280,"$height" \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" 2>/dev/null
echo "wrote $out"
