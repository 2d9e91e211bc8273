#!/usr/bin/env bash
# Install everything the test suite needs (Python packages, Debian's Chromium) and run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash .ci/install-browser
# iproute2 gives `ip netns` / `tc` for the fault tests that cut network paths
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 >/dev/null
    fi
fi

# hls.js (npm) for tests/browser/test_hls_chromium.py, once into a cache (same version as the test)
HLSJS_CACHE="${HLSJS_CACHE:-$HOME/.cache/unbroken-tests/hlsjs}"
if command -v npm >/dev/null && [[ ! -f "$HLSJS_CACHE/node_modules/hls.js/dist/hls.min.js" ]]; then
    npm install --prefix "$HLSJS_CACHE" --no-audit --no-fund --loglevel=error hls.js@1.7.4 \
        || echo "test.sh: npm install hls.js failed (the HLS browser tests will try again)" >&2
fi

python3 -m pytest -q -p no:cacheprovider "$@"
