#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, makes sure PostgreSQL
# answers (starting the local cluster, or a throwaway one), builds the extension, then runs
# the lint gates, `cargo test` and `pytest` (extra arguments go to pytest). Any failure fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/_env.sh

ensure_postgres
ensure_venv test
ensure_rust_lints
python_paths="python tests benches examples scripts"

echo "== lint: rustfmt, clippy, ruff, mypy --strict"
cargo fmt --check
PYO3_PYTHON="$venv/bin/python" cargo clippy --quiet --all-targets --features python -- -D warnings
"$venv/bin/ruff" check $python_paths
"$venv/bin/ruff" format --check $python_paths
"$venv/bin/python" -m mypy --strict python/ferroq examples/typed_app.py

echo "== cargo test: the core without Python, and the store conformance suite on both backends"
cargo test --quiet

echo "== stubtest: python/ferroq/_core.pyi matches the extension"
"$venv/bin/python" -m mypy.stubtest ferroq._core

echo "== pytest, warnings as errors (PostgreSQL at $FERROQ_TEST_DATABASE_URL)"
"$venv/bin/python" -m pytest -n 2 -q -W error "$@"
