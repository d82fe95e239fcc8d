#!/usr/bin/env bash
# The static checks, in order: ruff check, ruff format --check, mypy --strict, and the strict
# docs build. Each runs even when an earlier one failed, so one run shows every problem; the
# script fails if any of them failed. Expects .venv from scripts/setup.sh (full mode).
set -uo pipefail
cd "$(dirname "$0")/.."
# docs/_ext holds the docs build's griffe extension: Python like the rest.
PATHS=(src tests benchmarks examples docs/_ext)
# mkdocs-material prints a banner about its successor on every build; it is not a warning.
export NO_MKDOCS_2_WARNING=1
failed=()
step() {
    local name=$1
    shift
    echo "== $name" >&2
    "$@" || failed+=("$name")
}
step "ruff check" .venv/bin/ruff check "${PATHS[@]}"
step "ruff format --check" .venv/bin/ruff format --check "${PATHS[@]}"
step "mypy --strict" .venv/bin/mypy --strict src
# Not --quiet: it hides the warnings from the strict check too, and the build then passes.
step "mkdocs build --strict" .venv/bin/mkdocs build --strict
if [ ${#failed[@]} -gt 0 ]; then
    printf 'scripts/lint.sh: failed: %s\n' "$(IFS=,; echo "${failed[*]}")" >&2
    exit 1
fi
