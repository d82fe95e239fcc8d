#!/usr/bin/env bash
# Set up, run the static checks (scripts/lint.sh), then the whole test suite. Extra arguments
# go to pytest. The tests run even when a static check failed, so one run reports both; the
# script fails if either did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh || echo "scripts/test.sh: no headless browser; the HTML report test will skip" >&2
lint=0
bash scripts/lint.sh || lint=$?
tests=0
.venv/bin/python -m pytest "$@" || tests=$?
if [ "$lint" -ne 0 ]; then
    echo "scripts/test.sh: the static checks failed (see scripts/lint.sh above)" >&2
    exit "$lint"
fi
exit "$tests"
