#!/usr/bin/env bash
# Installs what is not Python: the Debian packages in scripts/debian-packages.txt (only the
# missing ones; needs root or sudo then) and the npm packages in package.json (into
# ./node_modules). Idempotent: a machine that has everything installs nothing.
# Usage: bash scripts/install-system.sh
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' scripts/debian-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
    # a package counts as there when node or npm come from elsewhere (e.g. the machine's own Node.js)
    case "$pkg" in
        nodejs) command -v node >/dev/null && continue ;;
        npm) command -v npm >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "install-system: need root to install: ${missing[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "install-system: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(/usr/bin/chromium --version 2>/dev/null) || { echo "install-system: /usr/bin/chromium --version failed" >&2; exit 1; }
echo "install-system: $version"

# hls.js for the HLS browser tests, at the version package.json pins
if [[ ! -f node_modules/hls.js/dist/hls.min.js ]] || ! grep -q '"version": "1.7.4"' node_modules/hls.js/package.json; then
    npm install --no-audit --no-fund --no-package-lock --loglevel=error
fi
