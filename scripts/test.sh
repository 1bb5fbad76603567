#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, makes sure PostgreSQL
# answers (starting the local cluster, or a throwaway one), builds the extension, then runs
# the lint gates, `cargo test`, the behaviour suite and then the fault suite (`tests/faults`);
# extra arguments run pytest with them instead of the two suites. Any failure fails it.
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

if [ $# -gt 0 ]; then
    echo "== pytest $*, warnings as errors (PostgreSQL at $FERROQ_TEST_DATABASE_URL)"
    "$venv/bin/python" -m pytest -n 2 -q -W error "$@"
    exit
fi
echo "== pytest: the behaviour suite, warnings as errors (PostgreSQL at $FERROQ_TEST_DATABASE_URL)"
"$venv/bin/python" -m pytest -n 2 -q -W error --ignore=tests/faults
# The fault suite crashes servers, kills processes and starts a dozen workers: run on its own,
# it does not starve the timing of the behaviour tests (nor they its recovery figures).
echo "== pytest tests/faults: the fault suite (a throwaway PostgreSQL cluster, a TCP proxy)"
"$venv/bin/python" -m pytest -n 2 -q -W error tests/faults
