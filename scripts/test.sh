#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, makes sure PostgreSQL
# answers (starting the local cluster, or a throwaway one), builds the extension, then runs
# `cargo test` and `pytest` (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/_env.sh

ensure_postgres
ensure_venv test

echo "== cargo test"
PYO3_PYTHON="$venv/bin/python" cargo test --quiet

echo "== stubtest: python/ferroq/_core.pyi matches the extension"
"$venv/bin/python" -m mypy.stubtest ferroq._core

echo "== pytest (PostgreSQL at $FERROQ_TEST_DATABASE_URL)"
"$venv/bin/python" -m pytest -n 2 -q "$@"
