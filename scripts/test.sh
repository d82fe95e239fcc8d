#!/usr/bin/env bash
# Set up, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh || echo "scripts/test.sh: no headless browser; the HTML report test will skip" >&2
exec .venv/bin/python -m pytest "$@"
