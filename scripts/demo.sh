#!/usr/bin/env bash
# ferroq's main job on a new machine: build it, then run examples/demo.py, a worker that
# processes real jobs across several queues and ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/_env.sh

ensure_postgres
ensure_venv
export FERROQ_DATABASE_URL=${FERROQ_DATABASE_URL:-$FERROQ_TEST_DATABASE_URL}
"$venv/bin/python" examples/demo.py
