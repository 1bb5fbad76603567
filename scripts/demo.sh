#!/usr/bin/env bash
# ferroq's main job on a new machine: build it, then run examples/demo.py, a worker that
# processes real jobs across several queues and ends by itself. Jobs are stored in the
# embedded SQLite default (./ferroq.db) unless FERROQ_DATABASE_URL names another database.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/_env.sh

ensure_venv
"$venv/bin/python" examples/demo.py
