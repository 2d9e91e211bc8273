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

python3 -m pytest -q -p no:cacheprovider "$@"
