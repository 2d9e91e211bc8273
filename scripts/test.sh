#!/usr/bin/env bash
# Installs everything the test suite needs and runs it:
#   - the project with its test extras, into the active virtual environment
#     (or ./.venv, made here when none is active: nothing goes into the system's Python);
#   - Debian packages and npm packages (scripts/install-system.sh).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash scripts/install-system.sh

python -m pytest -q -p no:cacheprovider "$@"
